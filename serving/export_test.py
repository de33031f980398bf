"""ONNX and TFLite exports against the SavedModel on real test images."""
import collections
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from models import features
from serving import export, layout


# float16 runs on the baseline CNN: MobileNetV2 at the fixtures' 64 px (2x2 final feature
# maps, which average few rounding errors) moves probabilities by up to 7e-2 in float16,
# beyond the bound; at 224 px, on the default cxr4 model, 9.5e-3.
@pytest.mark.parametrize("format_name,fixture", [("onnx", "trained_model"),
                                                 ("tflite", "trained_model"),
                                                 ("tflite-fp16", "trained_cnn")])
def test_float_exports_match_the_savedmodel(format_name, fixture, request, tmp_path):
    trained = request.getfixturevalue(fixture)
    output = str(tmp_path / f"model.{format_name}")
    report = export.export(trained.version_dir, format_name, output, trained.examples_dir)
    print(report.summary())
    assert report.images == trained.test_images
    assert report.top_class_agreement == 1.0
    # The bound for float exports; float16 weights have their own (serving/export.py).
    assert report.max_abs_difference <= (export.FLOAT16_TOLERANCE
                                         if format_name == "tflite-fp16" else 1e-3)
    assert report.disagreements == []
    assert os.path.getsize(output) > 0
    with open(export.parity_report_path(output)) as f:
        saved = json.load(f)
    assert saved["max_abs_difference"] == report.max_abs_difference
    assert saved["passed"] is True


def _check_int8_file_and_rounding(trained, output: str, rounded, convolutions: int) -> None:
    assert _io_types(output) == (np.int8, np.int8)
    assert os.path.getsize(output) < _float_size(trained) / 3  # int8 weights: a quarter
    assert len(rounded) == convolutions
    chosen = sum(layer["output_mse_chosen"] for layer in rounded)
    nearest = sum(layer["output_mse_nearest"] for layer in rounded)
    print(f"summed output MSE of the convolutions: nearest {nearest:.3g}, chosen {chosen:.3g}")
    assert chosen < nearest / 2


def test_int8_export_of_the_cnn_agrees_on_the_top_class(trained_cnn, tmp_path):
    output = str(tmp_path / "model_int8.tflite")
    report = export.export(trained_cnn.version_dir, "tflite-int8", output,
                           trained_cnn.examples_dir)
    print(report.summary())
    assert report.images == trained_cnn.test_images
    assert report.top_class_agreement >= export.INT8_MIN_AGREEMENT
    assert report.max_abs_difference > 0  # really quantized, not a float model
    _check_int8_file_and_rounding(trained_cnn, output, report.rounded_layers, 4)
    with open(export.parity_report_path(output)) as f:
        assert json.load(f)["rounded_layers"] == report.rounded_layers


def test_int8_export_of_mobilenet_rounds_every_convolution_and_reports_its_parity(
        trained_model, tmp_path):
    """Whether MobileNetV2 keeps 97 % of top classes in int8 depends on the CPU's int8
    kernels: this fixture's 40 test images agree fully on an AMD EPYC with AVX-512 VNNI and
    fell under 97 % on another CPU, and the default cxr4 model kept 93.4 %
    of 241 where it was measured. Either way the verdict, the error and the saved report must
    say the same, and the weight rounding must have been chosen."""
    output = str(tmp_path / "model_int8.tflite")
    try:
        report = export.export(trained_model.version_dir, "tflite-int8", output,
                               trained_model.examples_dir)
        refused = None
    except export.ParityError as error:
        refused = str(error)
    with open(export.parity_report_path(output)) as f:
        saved = json.load(f)
    print(saved["top_class_agreement"], refused)
    assert saved["images"] == trained_model.test_images
    assert saved["passed"] is (saved["top_class_agreement"] >= export.INT8_MIN_AGREEMENT)
    assert saved["passed"] is (refused is None)
    if refused is None:
        assert report.max_abs_difference > 0  # really quantized, not a float model
    # Every convolution: MobileNetV2's 35 Conv2D and 17 DepthwiseConv2D.
    _check_int8_file_and_rounding(trained_model, output, saved["rounded_layers"], 52)


def test_int8_export_below_the_agreement_is_refused_with_its_report(
        trained_model, tmp_path, monkeypatch):
    """Calibrated on blank images, the int8 ranges fit a flat input and clip every real
    film's activations, so the export falls far below 97 %: it says so in one line, and the
    file and its report stay for inspection."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, "PNG")
    monkeypatch.setattr(export, "calibration_images",
                        lambda examples_dir: [buffer.getvalue()] * 12)
    output = str(tmp_path / "model_int8.tflite")
    with pytest.raises(export.ParityError, match=r"tflite-int8 parity on 40 test images: top "
                                                 r"class agrees on \d+\.\d%.*FAILED"):
        export.export(trained_model.version_dir, "tflite-int8", output,
                      trained_model.examples_dir)
    with open(export.parity_report_path(output)) as f:
        saved = json.load(f)
    assert saved["passed"] is False
    assert saved["top_class_agreement"] < export.INT8_MIN_AGREEMENT
    assert len(saved["disagreements"]) >= 2
    assert _io_types(output) == (np.int8, np.int8)
    assert len(saved["rounded_layers"]) == 52


def _io_types(path):
    interpreter = tf.lite.Interpreter(model_path=path)
    return (interpreter.get_input_details()[0]["dtype"],
            interpreter.get_output_details()[0]["dtype"])


def _float_size(trained):
    return os.path.getsize(os.path.join(trained.version_dir, "variables",
                                        "variables.data-00000-of-00001"))


def test_calibration_images_are_class_balanced_training_images(trained_model):
    train = export.split_examples(trained_model.examples_dir, "train")
    test = set(export.split_images(trained_model.examples_dir, "test"))
    label_of = dict(train)
    chosen = export.calibration_images(trained_model.examples_dir, count=30)
    assert len(chosen) == 30
    assert not test & set(chosen)
    assert sorted(collections.Counter(label_of[image] for image in chosen).values()) == [10] * 3


def test_trained_models_are_confident_enough_for_meaningful_checks(trained_model, trained_cnn):
    """A near-uniform or one-class model would make top-class agreement random or trivial."""
    for trained in (trained_model, trained_cnn):
        images = export.split_images(trained.examples_dir, "test")
        probabilities = tf.saved_model.load(trained.version_dir).signatures[
            features.SERVING_SIGNATURE](**{features.SERVING_INPUT: tf.constant(images)})[
            features.PROBABILITIES_OUTPUT].numpy()
        print(f"median top probability {np.median(probabilities.max(axis=1)):.2f}, predicted "
              f"classes {np.bincount(probabilities.argmax(axis=1), minlength=3).tolist()}")
        assert np.median(probabilities.max(axis=1)) > 0.7
        assert len(set(probabilities.argmax(axis=1))) >= 2


def test_parity_rules():
    reference = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], dtype=np.float32)
    close = reference + np.float32(5e-4)
    assert export.check_parity("onnx", reference, close).passed
    assert not export.check_parity("onnx", reference, reference + np.float32(2e-3)).passed
    assert export.check_parity("tflite-fp16", reference, reference + np.float32(2e-3)).passed
    flipped = reference[:, [1, 0, 2]]
    report = export.check_parity("tflite-int8", reference, flipped)
    assert report.top_class_agreement == 0.0 and not report.passed
    assert not export.check_parity("tflite-fp16", reference, flipped).passed
    assert [d["index"] for d in report.disagreements] == [0, 1]


def test_fp16_does_not_count_near_ties_for_the_top_class():
    """Top two SavedModel probabilities 3e-4 apart (as on cxr3) may swap in float16."""
    reference = np.array([[0.4777, 0.0443, 0.4780], [0.9, 0.05, 0.05]], dtype=np.float32)
    swapped = np.array([[0.4783, 0.0457, 0.4760], [0.9, 0.05, 0.05]], dtype=np.float32)
    report = export.check_parity("tflite-fp16", reference, swapped)
    assert report.passed and report.near_ties == 1 and report.top_class_agreement == 0.5
    assert report.disagreements[0]["near_tie"] is True
    assert not export.check_parity("tflite", reference, swapped).passed
    # 4e-2 apart: a real top class, even though every probability stays within 5e-2.
    clear = np.array([[0.51, 0.02, 0.47]], dtype=np.float32)
    report = export.check_parity("tflite-fp16", clear, clear[:, [2, 1, 0]])
    assert not report.passed and report.near_ties == 0


def test_an_empty_training_split_is_an_export_error(tmp_path):
    os.makedirs(tmp_path / "Split-train")
    tf.io.TFRecordWriter(str(tmp_path / "Split-train" / "data.gz"), options="GZIP").close()
    with pytest.raises(export.ExportError, match="no images to calibrate int8"):
        export.calibration_images(str(tmp_path))


def test_missing_examples_or_model_are_export_errors(trained_model, tmp_path):
    with pytest.raises(export.ExportError, match="no Split-test"):
        export.export(trained_model.version_dir, "onnx", str(tmp_path / "m.onnx"),
                      str(tmp_path))
    with pytest.raises(layout.ModelDirError, match="no SavedModel"):
        export.export(str(tmp_path), "onnx", str(tmp_path / "m.onnx"),
                      trained_model.examples_dir)
