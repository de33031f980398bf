"""ONNX and TFLite exports against the SavedModel on real test images."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import features
from serving import export


@pytest.mark.parametrize("format_name", ["onnx", "tflite", "tflite-fp16"])
def test_float_exports_match_the_savedmodel(trained_model, tmp_path, format_name):
    output = str(tmp_path / f"model.{format_name}")
    report = export.export(trained_model.version_dir, format_name, output,
                           trained_model.examples_dir)
    print(report.summary())
    assert report.images == trained_model.test_images
    assert report.top_class_agreement == 1.0
    # The bound for float exports; float16 weights have their own (serving/export.py).
    assert report.max_abs_difference <= (export.FLOAT16_TOLERANCE
                                         if format_name == "tflite-fp16" else 1e-3)
    assert os.path.getsize(output) > 0
    with open(export.parity_report_path(output)) as f:
        saved = json.load(f)
    assert saved["max_abs_difference"] == report.max_abs_difference
    assert saved["passed"] is True


def test_int8_export_agrees_on_the_top_class(trained_cnn, tmp_path):
    output = str(tmp_path / "model_int8.tflite")
    report = export.export(trained_cnn.version_dir, "tflite-int8", output,
                           trained_cnn.examples_dir)
    print(report.summary())
    assert report.images == trained_cnn.test_images
    assert report.top_class_agreement >= 0.97
    assert report.max_abs_difference > 0  # really quantized, not a float model
    float_size = os.path.getsize(os.path.join(trained_cnn.version_dir, "variables",
                                              "variables.data-00000-of-00001"))
    assert os.path.getsize(output) < float_size / 3  # int8 weights: about a quarter


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


def test_missing_examples_or_model_are_export_errors(trained_model, tmp_path):
    with pytest.raises(export.ExportError, match="no Split-test"):
        export.export(trained_model.version_dir, "onnx", str(tmp_path / "m.onnx"),
                      str(tmp_path))
    with pytest.raises(export.ExportError, match="no SavedModel"):
        export.export(str(tmp_path), "onnx", str(tmp_path / "m.onnx"),
                      trained_model.examples_dir)
