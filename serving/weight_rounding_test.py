"""Int8 weight rounding of convolutions: better than nearest, on TFLite's grid, mean kept."""
import itertools
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE_DIR, sample_rows
from models import preprocessing
from serving import export, weight_rounding

SIZE = 32


def _loss(steps, exact, scale, second_moment):
    error = (steps - exact) * scale
    return np.einsum("ci,cij,cj->c", error, second_moment, error)


def _exhaustive_optimum(exact, scale, second_moment, fixed_tap: int) -> float:
    """The smallest loss over all 2^8 down/up roundings of the taps but the fixed one."""
    best = np.inf
    for bits in itertools.product([False, True], repeat=len(exact) - 1):
        steps = np.where(np.insert(bits, fixed_tap, False), np.ceil(exact), np.floor(exact))
        steps[fixed_tap] = np.round(exact[fixed_tap])
        best = min(best, _loss(steps[None], exact[None], scale[None], second_moment[None])[0])
    return best


def _smooth_patch_moments(channels: int, rng: np.random.Generator) -> np.ndarray:
    """E[p p^T] of 3x3 patches of smooth random images: neighbouring taps see similar inputs."""
    images = tf.image.resize(rng.uniform(0, 1, (channels, 8, 8, 1)), (40, 40)).numpy()
    patches = tf.image.extract_patches(images, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                                       "VALID").numpy().reshape(channels, -1, 9)
    return np.einsum("cpi,cpj->cij", patches, patches) / patches.shape[1]


def test_best_rounding_is_near_the_exhaustive_optimum():
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1, (64, 9))
    # One large tap per channel, as batch norm folding makes them.
    weights[:, 4] = rng.choice([-1, 1], 64) * rng.uniform(20, 60, 64)
    second = _smooth_patch_moments(64, rng)
    steps = weight_rounding.best_rounding(weights, second)

    scale = np.abs(weights).max(axis=1, keepdims=True) / 127
    exact = weights / scale
    assert np.all((steps == np.floor(exact)) | (steps == np.ceil(exact)))
    assert np.all(np.abs(steps).max(axis=1) == 127)
    assert np.all(np.abs(steps[:, 4]) == 127)  # the tap that sets TFLite's scale
    chosen = _loss(steps, exact, scale, second)
    nearest = _loss(np.round(exact), exact, scale, second)
    optimum = np.array([_exhaustive_optimum(e, s, g, fixed_tap=4)
                        for e, s, g in zip(exact, scale, second)])
    print(f"mean output MSE: nearest {nearest.mean():.3g}, chosen {chosen.mean():.3g}, "
          f"exhaustive {optimum.mean():.3g}")
    assert np.all(chosen <= nearest + 1e-15)
    assert chosen.mean() < nearest.mean() / 3
    assert chosen.mean() < optimum.mean() * 1.25


def _sample_images(count: int) -> np.ndarray:
    rows = sample_rows()[:count]
    return np.stack([preprocessing.decode_image(
        tf.io.read_file(os.path.join(SAMPLE_DIR, row["file"])), SIZE).numpy() for row in rows])


def _nested_depthwise_model() -> tf.keras.Model:
    """A MobileNetV2-like backbone (conv, BN, ReLU6, padded strided depthwise with two filters
    per channel, BN, ReLU6) nested in a classifier, like the pipeline's models."""
    inputs = tf.keras.Input((SIZE, SIZE, 3))
    x = tf.keras.layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="conv_BN")(x)
    x = tf.keras.layers.ReLU(6.0)(x)
    x = tf.keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = tf.keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, use_bias=False,
                                        name="depthwise")(x)
    x = tf.keras.layers.BatchNormalization(name="depthwise_BN")(x)
    x = tf.keras.layers.ReLU(6.0)(x)
    backbone = tf.keras.Model(inputs, x, name="backbone")
    outer_inputs = tf.keras.Input((SIZE, SIZE, 3))
    features = tf.keras.layers.GlobalAveragePooling2D()(backbone(outer_inputs))
    model = tf.keras.Model(outer_inputs, tf.keras.layers.Dense(3, activation="softmax")(features))
    rng = np.random.default_rng(1)
    for layer in backbone.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 2, channels)
            gamma[0] = 30.0  # one channel whose folded weights dwarf the others
            layer.set_weights([gamma, rng.normal(0, 0.1, channels),
                               rng.normal(0, 0.1, channels), rng.uniform(0.5, 2, channels)])
    return model


def _first_layer_output(model: tf.keras.Model, images: np.ndarray) -> np.ndarray:
    """The first convolution after its batch norm: the one layer whose input rounding leaves
    alone, so its output mean is the original's."""
    backbone = model.get_layer("backbone")
    return tf.keras.Model(backbone.inputs, backbone.get_layer("conv_BN").output)(
        images).numpy()


def test_rounded_weights_are_tflites_int8_weights_and_keep_the_output_mean(tmp_path):
    images = _sample_images(12)
    model = _nested_depthwise_model()
    before = _first_layer_output(model, images)

    rounded = weight_rounding.round_weights(model, images)

    assert [(layer.layer, layer.channels) for layer in rounded] == [("conv", 6),
                                                                    ("depthwise", 12)]
    assert all(layer.output_mse_chosen < layer.output_mse_nearest for layer in rounded)
    after = _first_layer_output(model, images)
    np.testing.assert_allclose(after.mean(axis=(0, 1, 2)), before.mean(axis=(0, 1, 2)),
                               atol=1e-4)  # bias correction
    batch_norm = model.get_layer("backbone").get_layer("depthwise_BN")
    gamma, _, _, variance = batch_norm.get_weights()
    folded = (model.get_layer("backbone").get_layer("depthwise").get_weights()[0].reshape(9, 12)
              * gamma / np.sqrt(variance + batch_norm.epsilon))
    steps = folded / (np.abs(folded).max(axis=0) / 127)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)

    converter = export._int8_converter(model, images)
    path = str(tmp_path / "model.tflite")
    with open(path, "wb") as f:
        f.write(converter.convert())
    interpreter = tf.lite.Interpreter(model_path=path)
    kernels = [detail for detail in interpreter.get_tensor_details()
               if detail["dtype"] == np.int8 and tuple(detail["shape"]) == (1, 3, 3, 12)]
    assert len(kernels) == 1
    tflite_steps = interpreter.get_tensor(kernels[0]["index"]).reshape(9, 12)
    np.testing.assert_array_equal(tflite_steps, np.round(steps))


def test_one_second_moment_for_all_channels_is_the_convolution_case():
    """A Conv2D's output channels share one E[p p^T]; the result is that of a copy per channel."""
    rng = np.random.default_rng(2)
    weights = rng.normal(0, 1, (5, 9))
    shared = _smooth_patch_moments(1, rng)[0]
    np.testing.assert_array_equal(
        weight_rounding.best_rounding(weights, shared),
        weight_rounding.best_rounding(weights, np.repeat(shared[None], 5, axis=0)))


def test_batch_norm_counts_as_folded_only_straight_after_a_linear_convolution():
    """TFLite folds batch norm into the kernel only when nothing comes between them; after an
    activation the scale is the kernel's own and the bias is corrected instead."""
    inputs = tf.keras.Input((SIZE, SIZE, 3))
    x = tf.keras.layers.Conv2D(4, 3, activation="relu", name="activated")(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.Conv2D(4, 1, name="plain")(x)
    x = tf.keras.layers.BatchNormalization(name="plain_BN")(x)
    branch = tf.keras.layers.DepthwiseConv2D(3, name="shared")(x)
    x = tf.keras.layers.Add()([tf.keras.layers.BatchNormalization()(branch), branch])
    model = tf.keras.Model(inputs, x)
    assert [(layer.name, batch_norm.name if batch_norm else None)
            for layer, batch_norm in weight_rounding.quantized_layers(model)] == [
        ("activated", None), ("plain", "plain_BN"), ("shared", None)]


def test_models_without_convolutions_are_left_alone():
    model = tf.keras.Sequential([tf.keras.Input((SIZE, SIZE, 3)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(3)])
    weights = [w.copy() for w in model.get_weights()]
    assert weight_rounding.round_weights(model, _sample_images(2)) == []
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_layer_outside_the_model_is_an_error():
    model = _nested_depthwise_model()
    with pytest.raises(ValueError, match="is not in"):
        weight_rounding.layer_input(model, tf.keras.layers.DepthwiseConv2D(3))
