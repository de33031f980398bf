"""Finding the version to load, and both predictors on the tiny pipeline's pushed model."""
import glob
import os

import numpy as np
import pytest

from app import predictors
from conftest import SAMPLE_DIR
from explain import gradcam_report
from models import features
from serving import layout, server

IMAGES = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:3]


@pytest.fixture(scope="module")
def local(tiny_pipeline):
    model = layout.resolve(os.path.dirname(tiny_pipeline.first.pushed_model_dir))
    return predictors.LocalPredictor(model)


def test_local_predictions_are_the_serving_signature_and_grad_cam_sees_the_same_model(
        local, tiny_pipeline):
    import tensorflow as tf
    assert local.model.directory == tiny_pipeline.second.pushed_model_dir  # the newest push
    signature = tf.saved_model.load(local.model.directory).signatures[features.SERVING_SIGNATURE]
    images = [open(path, "rb").read() for path in IMAGES]
    expected = signature(**{features.SERVING_INPUT: tf.constant(images)})
    expected_probabilities = expected[features.PROBABILITIES_OUTPUT].numpy()
    predictions = [local.predict(image) for image in images]
    assert [p.predicted_class for p in predictions] == [
        features.CLASS_NAMES[i] for i in expected_probabilities.argmax(axis=1)]
    np.testing.assert_allclose([list(p.probabilities.values()) for p in predictions],
                               expected_probabilities, atol=1e-6)
    assert list(predictions[0].probabilities) == features.CLASS_NAMES
    # Grad-CAM's Keras model, fed the same preprocessing, gives the same probabilities.
    np.testing.assert_allclose(local.cam.predict(np.stack(
        [gradcam_report.decode(image, local.cam.image_size) for image in images])),
        expected_probabilities, atol=1e-5)


def test_class_overlays_show_one_heatmap_per_class(local):
    overlays = predictors.class_overlays(local.cam, open(IMAGES[0], "rb").read())
    assert list(overlays) == features.CLASS_NAMES
    panels = [np.asarray(overlays[name], dtype=float) for name in features.CLASS_NAMES]
    side = panels[0].shape[0]
    assert all(panel.shape == (side, 2 * side, 3) for panel in panels)
    # The left half is the model's input, the same for every class; the heatmaps differ.
    np.testing.assert_array_equal(panels[0][:, :side], panels[1][:, :side])
    assert np.abs(panels[0][:, side:] - panels[2][:, side:]).max() > 10


def test_remote_predictions_match_local_ones(local):
    running = server.start_server(os.path.dirname(local.model.directory), port=0)
    try:
        remote = predictors.RemotePredictor(f"{server.LOOPBACK}:{running.grpc_port}",
                                            running.servable.model_name)
        remote.check()
        image = open(IMAGES[1], "rb").read()
        remote_prediction, local_prediction = remote.predict(image), local.predict(image)
    finally:
        running.stop()
    assert remote_prediction.predicted_class == local_prediction.predicted_class
    np.testing.assert_allclose(list(remote_prediction.probabilities.values()),
                               list(local_prediction.probabilities.values()), atol=1e-6)
