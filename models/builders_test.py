import h5py
import numpy as np
import pytest
import tensorflow as tf

from models import builders, features


def _trainable_layers(model):
    return {w.name.split("/")[0] for w in model.trainable_weights}


def test_baseline_cnn_outputs_class_probabilities():
    model = builders.build("baseline_cnn", image_size=64)
    probabilities = model(tf.random.uniform((2, 64, 64, 3)), training=False).numpy()
    assert probabilities.shape == (2, features.NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.count_params() < 1_000_000
    assert not builders.has_backbone(model)


def test_mobilenet_v2_loads_the_shipped_imagenet_weights():
    model = builders.build("mobilenet_v2", image_size=96)
    kernel = model.get_layer(builders.BACKBONE_NAME).get_layer("Conv1").kernel.numpy()
    with h5py.File(builders.MOBILENET_V2_WEIGHTS, "r") as weights:
        stored = weights["Conv1"]["Conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(kernel, stored)
    probabilities = model(tf.random.uniform((1, 96, 96, 3)), training=False).numpy()
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def test_mobilenet_v2_trains_head_first_then_top_of_backbone():
    model = builders.build("mobilenet_v2", image_size=96)
    assert [w.name for w in model.trainable_weights] == \
        [f"{features.PROBABILITIES_OUTPUT}/kernel:0", f"{features.PROBABILITIES_OUTPUT}/bias:0"]

    builders.set_fine_tuning(model, trainable_backbone_layers=20)

    backbone = model.get_layer(builders.BACKBONE_NAME)
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable, "fine-tuning must unfreeze part of the backbone"
    assert all(backbone.layers.index(layer) >= len(backbone.layers) - 20 for layer in trainable)
    assert not any(isinstance(layer, tf.keras.layers.BatchNormalization) for layer in trainable)
    assert backbone.get_layer("Conv1").trainable is False
    assert backbone.get_layer("Conv_1").trainable is True


def test_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights not found"):
        builders.build_mobilenet_v2(96, weights=str(tmp_path / "none.h5"))


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="baseline_cnn, mobilenet_v2"):
        builders.build("resnet9000")
