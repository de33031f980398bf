import h5py
import numpy as np
import pytest
import tensorflow as tf

from models import architectures, builders, features


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
    with pytest.raises(builders.WeightsError, match="weights file not found"):
        builders.build_mobilenet_v2(96, weights=str(tmp_path / "none.h5"))


def test_every_model_name_has_a_builder():
    assert set(builders.BACKBONES) == set(architectures.TRANSFER_MODELS)


def test_efficientnet_lite0_loads_the_shipped_weights_and_its_own_normalisation(tmp_path):
    model = builders.build("efficientnet_lite0", image_size=64)
    backbone = model.get_layer(builders.BACKBONE_NAME)
    with h5py.File(builders.EFFICIENTNET_LITE0_WEIGHTS, "r") as weights:
        stored = weights["stem_conv"]["stem_conv"]["kernel:0"][()]
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").kernel.numpy(), stored)
    assert not any("se_" in layer.name for layer in backbone.layers)
    # Transform's 127/255 grey is the backbone's zero: (x * 255 - 127) / 128.
    normalization = next(layer for layer in backbone.layers
                         if isinstance(layer, tf.keras.layers.Normalization))
    normalise = tf.keras.Model(backbone.input, normalization.output)
    grey = normalise(tf.fill((1, 64, 64, 3), 127.0)).numpy()
    np.testing.assert_allclose(grey, 0.0, atol=1e-5)
    assert model.count_params() == 3_413_031 + 1280 * features.NUM_CLASSES + features.NUM_CLASSES
    images = tf.random.stateless_uniform((2, 64, 64, 3), seed=(1, 2))
    expected = model(images, training=False).numpy()
    model.save(tmp_path / "saved", save_format="tf", save_traces=False)
    reloaded = tf.keras.models.load_model(tmp_path / "saved")
    np.testing.assert_allclose(reloaded(images, training=False).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name, params", [("efficientnet_b0", 4_053_414),
                                          ("resnet50", 23_593_859)])
def test_downloadable_backbones_build_with_explicit_random_init(name, params):
    model = builders.build(name, image_size=64, weights=builders.NO_WEIGHTS)
    assert model.count_params() == params
    assert model(tf.zeros((1, 64, 64, 3)), training=False).shape == (1, features.NUM_CLASSES)


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet50"])
def test_downloadable_backbones_refuse_to_start_without_weights(name, tmp_path, monkeypatch):
    # No Keras cache and a proxy that refuses connections: the download fails here for sure.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert builders.resolve_weights(name) == builders.IMAGENET
    with pytest.raises(builders.WeightsError,
                       match=f"{name} needs ImageNet weights.*--weights PATH.*--weights none"):
        builders.check_weights_available(name)


def test_weights_options_are_checked_per_model(tmp_path):
    assert builders.resolve_weights("mobilenet_v2") == builders.MOBILENET_V2_WEIGHTS
    assert builders.resolve_weights("efficientnet_lite0", "none") is None
    assert builders.resolve_weights("baseline_cnn") is None
    with pytest.raises(builders.WeightsError, match="trained from scratch"):
        builders.resolve_weights("baseline_cnn", builders.MOBILENET_V2_WEIGHTS)
    with pytest.raises(builders.WeightsError, match="bundled ImageNet weights"):
        builders.resolve_weights("efficientnet_lite0", "imagenet")
    local = tmp_path / "resnet50_notop.h5"
    local.write_bytes(b"weights")
    assert builders.resolve_weights("resnet50", str(local)) == str(local)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="baseline_cnn, mobilenet_v2"):
        builders.build("resnet9000")


def test_downloadable_backbone_loads_weights_from_a_local_file(tmp_path):
    # A no-top weights file as a user would pass with --weights PATH.
    source = builders.BACKBONES["efficientnet_b0"].build((64, 64, 3), None)
    weights_file = str(tmp_path / "efficientnet_b0_notop.h5")
    source.save_weights(weights_file)
    model = builders.build("efficientnet_b0", image_size=64, weights=weights_file)
    loaded = model.get_layer(builders.BACKBONE_NAME).get_layer("stem_conv").kernel.numpy()
    np.testing.assert_array_equal(loaded, source.get_layer("stem_conv").kernel.numpy())
