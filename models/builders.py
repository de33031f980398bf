"""Model builders: a small CNN from scratch and MobileNetV2 transfer learning.

Every model takes float32 images in [0, 1] of shape [size, size, 3] (Transform's output)
and returns softmax probabilities in features.CLASS_NAMES order.
"""
import os
from typing import Optional

import tensorflow as tf

from models import features

MODEL_NAMES = ("baseline_cnn", "mobilenet_v2")
BACKBONE_NAME = "backbone"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
MOBILENET_V2_WEIGHTS = os.path.join(WEIGHTS_DIR, "mobilenet_v2_1.0_224_no_top.h5")


def augmentation(seed: Optional[int] = None) -> tf.keras.Sequential:
    """Geometry and exposure changes seen between real chest films; active only in training.

    No left-right flips: they move the heart to the right (dextrocardia is rare) and mirror
    the side markers, teaching the model anatomy that does not occur.
    """
    return tf.keras.Sequential([
        tf.keras.layers.RandomRotation(5 / 360, fill_mode="constant", seed=seed),
        tf.keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed),
        tf.keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
        tf.keras.layers.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=seed),
        tf.keras.layers.RandomContrast(0.1, seed=seed),
    ], name="augmentation")


def _inputs(image_size: int) -> tf.keras.Input:
    return tf.keras.Input(shape=(image_size, image_size, features.CHANNELS),
                          name=features.IMAGE_XF_KEY)


def _head(x: tf.Tensor, dropout: float) -> tf.Tensor:
    x = tf.keras.layers.Dropout(dropout)(x)
    return tf.keras.layers.Dense(features.NUM_CLASSES, activation="softmax",
                                 name=features.PROBABILITIES_OUTPUT)(x)


def build_baseline_cnn(image_size: int = features.DEFAULT_IMAGE_SIZE,
                       dropout: float = 0.3) -> tf.keras.Model:
    """Four conv blocks trained from scratch: the reference any transfer model must beat."""
    inputs = _inputs(image_size)
    x = augmentation()(inputs)
    for filters in (32, 64, 128, 256):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, _head(x, dropout), name="baseline_cnn")


def build_mobilenet_v2(image_size: int = features.DEFAULT_IMAGE_SIZE,
                       weights: Optional[str] = MOBILENET_V2_WEIGHTS,
                       dropout: float = 0.3) -> tf.keras.Model:
    """ImageNet MobileNetV2 1.0 (frozen) under a new head; see set_fine_tuning for phase 2."""
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"MobileNetV2 weights not found: {weights}")
    backbone = tf.keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, features.CHANNELS), include_top=False,
        weights=weights)
    backbone._name = BACKBONE_NAME  # pylint: disable=protected-access
    backbone.trainable = False
    inputs = _inputs(image_size)
    x = augmentation()(inputs)
    x = tf.keras.layers.Rescaling(2.0, offset=-1.0, name="to_mobilenet_range")(x)
    x = backbone(x, training=False)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, _head(x, dropout), name="mobilenet_v2")


def set_fine_tuning(model: tf.keras.Model, trainable_backbone_layers: int) -> None:
    """Unfreeze the top layers of the backbone, keeping batch-norm statistics fixed.

    Batch norm stays frozen because the small chest X-ray batches would overwrite the
    ImageNet statistics the frozen lower layers depend on.
    """
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    cutoff = len(backbone.layers) - trainable_backbone_layers
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= cutoff and not isinstance(
            layer, tf.keras.layers.BatchNormalization)


def build(name: str, image_size: int = features.DEFAULT_IMAGE_SIZE,
          dropout: float = 0.3) -> tf.keras.Model:
    if name == "baseline_cnn":
        return build_baseline_cnn(image_size, dropout)
    if name == "mobilenet_v2":
        return build_mobilenet_v2(image_size, dropout=dropout)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def has_backbone(model: tf.keras.Model) -> bool:
    return any(layer.name == BACKBONE_NAME for layer in model.layers)
