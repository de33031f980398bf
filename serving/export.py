"""ONNX and TFLite exports of a pushed model, each checked against the SavedModel.

ONNX and TFLite have no image-decoding or string ops, so an export takes what Transform
produces: float32 images [N, size, size, 3] in [0, 1]. Callers decode with
models.preprocessing.decode_image, the function inside the SavedModel's own graph.

Every export is compared with the SavedModel's serving_default on the ExampleGen test split
(PARITY_RULES). Float exports (ONNX, float32 TFLite) must agree on the top class for every
image and within FLOAT_TOLERANCE on every probability. float16 weights cannot meet that on a
confident model (rounding the weights moves confident probabilities by up to 3e-2), so
tflite-fp16 has its own bound, and an image whose SavedModel top two probabilities are
within FLOAT16_NEAR_TIE_MARGIN has no top class for float16 to keep. int8 must agree on the
top class for INT8_MIN_AGREEMENT of the images: before converting, the int8 weights of every
convolution are rounded to minimise its output error on training images
(serving/weight_rounding.py), which TFLite's nearest rounding does not, and which MobileNetV2
needs. The numbers go to `<output>.parity.json` beside the export.
"""
import dataclasses
import glob
import json
import os
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from models import features, preprocessing
from serving import layout, weight_rounding

FLOAT_TOLERANCE = 1e-3
FLOAT16_TOLERANCE = 5e-2
# SavedModel top two probabilities closer than this: a near-tie, whose top class float16
# weights may flip. On the default cxr4 model (224 px, 241 test images) they moved
# probabilities by up to 9.5e-3 and swapped two top classes decided by 3.7e-3 and 9.4e-3:
# a margin below twice the largest move is not one the float16 weights can be held to.
FLOAT16_NEAR_TIE_MARGIN = 2e-2
INT8_MIN_AGREEMENT = 0.97


@dataclasses.dataclass(frozen=True)
class ParityRule:
    min_agreement: float  # share of (counted) images with the same top class
    max_difference: Optional[float] = None  # on every probability
    near_tie_margin: Optional[float] = None  # near-ties are not counted for the top class

    def describe(self) -> str:
        text = f"top class agrees on >= {self.min_agreement:.0%}"
        if self.near_tie_margin is not None:
            text += (f" of images whose SavedModel top two probabilities differ by "
                     f">= {self.near_tie_margin:g}")
        if self.max_difference is not None:
            text += f" and |difference| <= {self.max_difference:g}"
        return text


PARITY_RULES: Dict[str, ParityRule] = {
    "onnx": ParityRule(1.0, FLOAT_TOLERANCE),
    "tflite": ParityRule(1.0, FLOAT_TOLERANCE),
    "tflite-fp16": ParityRule(1.0, FLOAT16_TOLERANCE, FLOAT16_NEAR_TIE_MARGIN),
    "tflite-int8": ParityRule(INT8_MIN_AGREEMENT),
}
FORMATS = tuple(PARITY_RULES)
ONNX_OPSET = 17
# Calibration images for int8, taken from the training split in equal numbers per class.
REPRESENTATIVE_IMAGES = 99
# Calibration images the int8 weight rounding is chosen on: its cost grows with their number.
ROUNDING_IMAGES = 24
# Test images decoded and compared at a time: the check's memory does not grow with the split.
PARITY_BATCH = 64


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
    near_ties: int = 0  # images not counted for the top class under the rule
    # test-split index, SavedModel and export probabilities of each image whose top class changed
    disagreements: List[Dict] = dataclasses.field(default_factory=list)
    # int8: layers whose weight rounding was chosen, with the output error it saved
    rounded_layers: List[Dict] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        text = (f"{self.format} parity on {self.images} test images: top class agrees on "
                f"{self.top_class_agreement:.1%}, max |probability difference| "
                f"{self.max_abs_difference:.2e} ({self.requirement}: {verdict})")
        if self.near_ties:
            text += f"; {self.near_ties} near-tie image(s) not counted for the top class"
        if self.rounded_layers:
            text += (f"; int8 weight rounding chosen on training images for "
                     f"{len(self.rounded_layers)} convolution(s)")
        return text


class ParityError(RuntimeError):
    """The export disagrees with the SavedModel beyond its tolerance."""


def split_examples(examples_dir: str, split: str,
                   limit: Optional[int] = None) -> List[Tuple[bytes, str]]:
    """(encoded image, label) of one ExampleGen split (gzipped TFRecords under Split-<name>/)."""
    return list(_iter_split_examples(examples_dir, split, limit))


def _iter_split_examples(examples_dir: str, split: str,
                         limit: Optional[int] = None) -> Iterator[Tuple[bytes, str]]:
    files = sorted(glob.glob(os.path.join(examples_dir, f"Split-{split}", "*.gz")))
    if not files:
        raise ExportError(f"no Split-{split}/*.gz records under {examples_dir} "
                          "(pass an ImageExampleGen examples folder)")
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            features.LABEL_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit:
        records = records.take(limit)
    for batch in records.batch(PARITY_BATCH):
        parsed = tf.io.parse_example(batch, spec)
        yield from zip(parsed[features.IMAGE_KEY].numpy(),
                       (label.decode() for label in parsed[features.LABEL_KEY].numpy()))


def image_batches(examples_dir: str, split: str, batch_size: int) -> Iterator[List[bytes]]:
    """Encoded images of one split, batch_size at a time, in file order (none kept)."""
    batch = []
    for image, _ in _iter_split_examples(examples_dir, split):
        batch.append(image)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def split_images(examples_dir: str, split: str, limit: Optional[int] = None) -> List[bytes]:
    """Encoded image bytes of one ExampleGen split, in file order."""
    return [image for image, _ in split_examples(examples_dir, split, limit)]


def calibration_images(examples_dir: str, count: int = REPRESENTATIVE_IMAGES) -> List[bytes]:
    """Up to `count` training images, the same number from each class, spread over the split:
    int8 ranges calibrated on one class clip the activations of the others. Never the test
    split, which judges the export."""
    by_class: Dict[str, List[bytes]] = {}
    for image, label in split_examples(examples_dir, "train"):
        by_class.setdefault(label, []).append(image)
    if not by_class:
        raise ExportError(f"Split-train under {examples_dir} has no images to calibrate int8 on")
    per_class = max(1, count // len(by_class))
    return [image for label in sorted(by_class) for image in spread(by_class[label], per_class)]


def spread(items: list, count: int) -> list:
    """`count` items evenly spaced over the list: ExampleGen writes a split in file order, so
    its first records can all be one class, which would calibrate int8 ranges on one class."""
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


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


def _batches(images: np.ndarray) -> Callable[[], Iterator[List[np.ndarray]]]:
    """A TFLite representative/debug dataset: one image per call, like the export."""
    def dataset() -> Iterator[List[np.ndarray]]:
        for image in images:
            yield [image[np.newaxis].astype(np.float32)]
    return dataset


def _converter(model: tf.keras.Model) -> tf.lite.TFLiteConverter:
    """One image per call (the on-device case); a fixed shape lets TFLite's XNNPack run."""
    function = _image_function(model, batch_size=1).get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([function], model)


def _int8_converter(model: tf.keras.Model,
                    representative_images: np.ndarray) -> tf.lite.TFLiteConverter:
    """Full-integer quantization (per-channel weights), int8 input and output."""
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _batches(representative_images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


def export_tflite(model: tf.keras.Model, output: str, weights: str = "float32",
                  representative_images: Optional[np.ndarray] = None) -> None:
    """weights "float32", "float16" (half the size), or "int8": full-integer quantization
    with int8 input and output, calibrated on `representative_images`."""
    if weights == "int8":
        converter = _int8_converter(model, representative_images)
    else:
        converter = _converter(model)
        if weights == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
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
    """The format's PARITY_RULES applied to SavedModel and export probabilities [N, classes]."""
    rule = PARITY_RULES[format_name]
    agrees = reference.argmax(axis=1) == exported.argmax(axis=1)
    difference = float(np.abs(reference - exported).max())
    top_two = np.sort(reference, axis=1)[:, -2:]
    near_tie = (np.zeros(len(reference), bool) if rule.near_tie_margin is None
                else top_two[:, 1] - top_two[:, 0] < rule.near_tie_margin)
    counted = agrees[~near_tie]
    passed = bool(counted.size == 0 or counted.mean() >= rule.min_agreement)
    if rule.max_difference is not None:
        passed = passed and difference <= rule.max_difference
    disagreements = [{"index": int(i), "near_tie": bool(near_tie[i]),
                      "savedmodel": np.round(reference[i].astype(float), 4).tolist(),
                      "export": np.round(exported[i].astype(float), 4).tolist()}
                     for i in np.flatnonzero(~agrees)]
    return ParityReport(format_name, len(reference), float(agrees.mean()), difference, passed,
                        rule.describe(), int(near_tie.sum()), disagreements)


def export(version_dir: str, format_name: str, output: str, examples_dir: str,
           progress: bool = False) -> ParityReport:
    """Write the export, check it on the test split and save the report beside it.

    The test split is read PARITY_BATCH images at a time (progress: a bar on stderr when it
    is a terminal).
    Raises ParityError (after saving the report) when the export misses its tolerance.
    """
    from tqdm import tqdm

    if format_name not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format_name!r}")
    if next(image_batches(examples_dir, "test", 1), None) is None:  # before any export
        raise ExportError(f"Split-test under {examples_dir} holds no examples")
    version_dir = layout.find_saved_model(version_dir)
    model = layout.load_keras_model(version_dir)
    size = image_size(model)
    rounded_layers: List[weight_rounding.RoundedLayer] = []
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if format_name == "onnx":
        export_onnx(model, output)
        predictor = onnx_predictor(output)
    elif format_name == "tflite-int8":
        representative = decode_images(calibration_images(examples_dir), size)
        rounded_layers = weight_rounding.round_weights(
            model, np.stack(spread(list(representative), ROUNDING_IMAGES)))
        export_tflite(model, output, "int8", representative)
        predictor = tflite_predictor(output)
    else:
        export_tflite(model, output, "float16" if format_name == "tflite-fp16" else "float32")
        predictor = tflite_predictor(output)

    saved_model = tf.saved_model.load(version_dir).signatures[features.SERVING_SIGNATURE]
    reference, exported = [], []
    for batch in tqdm(image_batches(examples_dir, "test", PARITY_BATCH),
                      desc="checking on the test split", unit="batch",
                      disable=None if progress else True):
        reference.append(saved_model(**{features.SERVING_INPUT: tf.constant(batch)})[
            features.PROBABILITIES_OUTPUT].numpy())
        exported.append(predictor(decode_images(batch, size)))
    report = check_parity(format_name, np.concatenate(reference), np.concatenate(exported))
    report.rounded_layers = [dataclasses.asdict(layer) for layer in rounded_layers]
    with open(parity_report_path(output), "w") as f:
        json.dump(dataclasses.asdict(report), f, indent=2)
    if not report.passed:
        raise ParityError(report.summary())
    return report


def parity_report_path(output: str) -> str:
    return output + ".parity.json"
