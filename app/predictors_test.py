"""Finding the version to load, and both predictors on the tiny pipeline's pushed model."""
import glob
import os

import numpy as np
import pytest

from app import predictors
from conftest import SAMPLE_DIR
from models import features
from serving import server

IMAGES = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:3]


def _version(path) -> str:
    os.makedirs(path)
    open(os.path.join(path, "saved_model.pb"), "wb").close()
    return str(path)


def test_resolve_accepts_serving_dir_model_dir_or_version(tmp_path):
    _version(tmp_path / "cxr_classifier" / "7")
    newest = _version(tmp_path / "cxr_classifier" / "12")
    expected = predictors.ModelVersion("cxr_classifier", "12", newest)
    assert predictors.resolve_model_dir(str(tmp_path)) == expected
    assert predictors.resolve_model_dir(str(tmp_path / "cxr_classifier")) == expected
    assert predictors.resolve_model_dir(newest) == expected
    older = str(tmp_path / "cxr_classifier" / "7")
    assert predictors.resolve_model_dir(older).version == "7"


def test_resolve_needs_a_name_when_several_models_are_pushed(tmp_path):
    _version(tmp_path / "cxr_classifier" / "1")
    other = _version(tmp_path / "cxr_baseline" / "3")
    with pytest.raises(server.ModelDirError) as error:
        predictors.resolve_model_dir(str(tmp_path))
    assert str(error.value) == (f"{tmp_path} holds the models cxr_baseline, cxr_classifier: "
                                "choose one with --model-name")
    assert predictors.resolve_model_dir(str(tmp_path), "cxr_baseline").directory == other


def test_resolve_explains_missing_models(tmp_path):
    with pytest.raises(server.ModelDirError, match="model directory not found"):
        predictors.resolve_model_dir(str(tmp_path / "nope"))
    with pytest.raises(server.ModelDirError, match="no numbered SavedModel versions"):
        predictors.resolve_model_dir(str(tmp_path))


@pytest.fixture(scope="module")
def local(tiny_pipeline):
    model = predictors.resolve_model_dir(os.path.dirname(tiny_pipeline.first.pushed_model_dir))
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
        [predictors.explain.decode(image, local.cam.image_size) for image in images])),
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
