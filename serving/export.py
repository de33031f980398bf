"""ONNX and TFLite exports of a pushed model, each checked against the SavedModel.

ONNX and TFLite have no image-decoding or string ops, so an export takes what Transform
produces: float32 images [N, size, size, 3] in [0, 1]. Callers decode with
models.preprocessing.decode_image, the function inside the SavedModel's own graph.

Every export is compared with the SavedModel's serving_default on the ExampleGen test split
(PARITY_RULES). Float exports (ONNX, float32 TFLite) must agree on the top class for every
image and within FLOAT_TOLERANCE on every probability. float16 weights cannot meet that on a
confident model (rounding the weights moves confident probabilities by about 1e-2), so
tflite-fp16 has its own bound; int8 must agree on the top class for INT8_MIN_AGREEMENT of the
images. The numbers go to `<output>.parity.json` beside the export.
"""
import dataclasses
import glob
import json
import os
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from models import features, preprocessing

FLOAT_TOLERANCE = 1e-3
FLOAT16_TOLERANCE = 5e-2
INT8_MIN_AGREEMENT = 0.97
# format -> (minimum share of images with the same top class, maximum |probability difference|)
PARITY_RULES: Dict[str, Tuple[float, Optional[float]]] = {
    "onnx": (1.0, FLOAT_TOLERANCE),
    "tflite": (1.0, FLOAT_TOLERANCE),
    "tflite-fp16": (1.0, FLOAT16_TOLERANCE),
    "tflite-int8": (INT8_MIN_AGREEMENT, None),
}
FORMATS = tuple(PARITY_RULES)
ONNX_OPSET = 17
REPRESENTATIVE_IMAGES = 100


class ExportError(ValueError):
    """Bad export inputs (missing model or examples); reported as a usage error."""


@dataclasses.dataclass
class ParityReport:
    format: str
    images: int
    top_class_agreement: float
    max_abs_difference: float
    passed: bool
    requirement: str

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"{self.format} parity on {self.images} test images: top class agrees on "
                f"{self.top_class_agreement:.1%}, max |probability difference| "
                f"{self.max_abs_difference:.2e} ({self.requirement}: {verdict})")


class ParityError(RuntimeError):
    """The export disagrees with the SavedModel beyond its tolerance."""


def split_images(examples_dir: str, split: str, limit: Optional[int] = None) -> List[bytes]:
    """Encoded image bytes of one ExampleGen split (gzipped TFRecords under Split-<name>/)."""
    files = sorted(glob.glob(os.path.join(examples_dir, f"Split-{split}", "*.gz")))
    if not files:
        raise ExportError(f"no Split-{split}/*.gz records under {examples_dir} "
                          "(pass an ImageExampleGen examples folder)")
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit:
        records = records.take(limit)
    return [tf.io.parse_single_example(record, spec)[features.IMAGE_KEY].numpy()
            for record in records]


def spread(items: List[bytes], count: int) -> List[bytes]:
    """`count` items evenly spaced over the list: ExampleGen writes a split in file order, so
    its first records can all be one class, which would calibrate int8 ranges on one class."""
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def load_keras_model(version_dir: str) -> tf.keras.Model:
    if not os.path.isfile(os.path.join(version_dir, "saved_model.pb")):
        raise ExportError(f"no SavedModel in {version_dir} (pass a pushed version folder, "
                          "<serving_dir>/<model_name>/<version>)")
    return tf.keras.models.load_model(version_dir, compile=False)


def image_size(model: tf.keras.Model) -> int:
    return int(model.input_shape[1])


def decode_images(images: List[bytes], size: int) -> np.ndarray:
    """Transform's decoding, eagerly: the exports' input."""
    return np.stack([preprocessing.decode_image(tf.constant(image), size).numpy()
                     for image in images])


def _image_function(model: tf.keras.Model, batch_size: Optional[int] = None) -> tf.function:
    """images [batch, size, size, 3] -> {"probabilities": [batch, 3]}, inference mode."""
    size = image_size(model)
    spec = tf.TensorSpec([batch_size, size, size, features.CHANNELS], tf.float32,
                         name=features.IMAGE_XF_KEY)
    return tf.function(
        lambda images: {features.PROBABILITIES_OUTPUT: model(images, training=False)},
        input_signature=[spec])


def export_onnx(model: tf.keras.Model, output: str) -> None:
    import tf2onnx
    function = _image_function(model)
    tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                  opset=ONNX_OPSET, output_path=output)


def export_tflite(model: tf.keras.Model, output: str, weights: str = "float32",
                  representative_images: Optional[np.ndarray] = None) -> None:
    """weights "float32", "float16" (half the size), or "int8": full-integer quantization
    with int8 input and output, calibrated on `representative_images`.

    One image per call (the on-device case); a fixed shape lets TFLite's XNNPack delegate run.
    """
    function = _image_function(model, batch_size=1).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if weights == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif weights == "int8":
        def representative_dataset() -> Iterator[List[np.ndarray]]:
            for image in representative_images:
                yield [image[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with open(output, "wb") as f:
        f.write(converter.convert())


def onnx_predictor(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda images: session.run(None, {input_name: images})[0]


def tflite_predictor(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """Runs one image at a time, (de)quantizing int8 inputs and outputs with their scales."""
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def predict(images: np.ndarray) -> np.ndarray:
        results = []
        for image in images:
            value = image[np.newaxis]
            if source["dtype"] != np.float32:
                scale, zero_point = source["quantization"]
                info = np.iinfo(source["dtype"])
                value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
            interpreter.set_tensor(source["index"], value.astype(source["dtype"]))
            interpreter.invoke()
            result = interpreter.get_tensor(target["index"])
            if target["dtype"] != np.float32:
                scale, zero_point = target["quantization"]
                result = (result.astype(np.float32) - zero_point) * scale
            results.append(result[0])
        return np.stack(results)

    return predict


def check_parity(format_name: str, reference: np.ndarray, exported: np.ndarray) -> ParityReport:
    agreement = float(np.mean(reference.argmax(axis=1) == exported.argmax(axis=1)))
    difference = float(np.abs(reference - exported).max())
    min_agreement, max_difference = PARITY_RULES[format_name]
    requirement = f"top class agrees on >= {min_agreement:.0%}"
    passed = agreement >= min_agreement
    if max_difference is not None:
        requirement += f" and |difference| <= {max_difference:g}"
        passed = passed and difference <= max_difference
    return ParityReport(format_name, len(reference), agreement, difference, passed, requirement)


def export(version_dir: str, format_name: str, output: str, examples_dir: str) -> ParityReport:
    """Write the export, check it on the test split and save the report beside it.

    Raises ParityError (after saving the report) when the export misses its tolerance.
    """
    if format_name not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format_name!r}")
    test_images = split_images(examples_dir, "test")
    model = load_keras_model(version_dir)
    size = image_size(model)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if format_name == "onnx":
        export_onnx(model, output)
        predictor = onnx_predictor(output)
    elif format_name == "tflite-int8":
        representative = decode_images(spread(split_images(examples_dir, "train"),
                                              REPRESENTATIVE_IMAGES), size)
        export_tflite(model, output, "int8", representative)
        predictor = tflite_predictor(output)
    else:
        export_tflite(model, output, "float16" if format_name == "tflite-fp16" else "float32")
        predictor = tflite_predictor(output)

    saved_model = tf.saved_model.load(version_dir).signatures[features.SERVING_SIGNATURE]
    reference = saved_model(**{features.SERVING_INPUT: tf.constant(test_images)})[
        features.PROBABILITIES_OUTPUT].numpy()
    report = check_parity(format_name, reference, predictor(decode_images(test_images, size)))
    with open(parity_report_path(output), "w") as f:
        json.dump(dataclasses.asdict(report), f, indent=2)
    if not report.passed:
        raise ParityError(report.summary())
    return report


def parity_report_path(output: str) -> str:
    return output + ".parity.json"
