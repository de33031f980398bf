"""Model builders: a small CNN from scratch and ImageNet transfer-learning backbones.

Every model takes float32 images in [0, 1] of shape [size, size, 3] (Transform's output)
and returns softmax probabilities in features.CLASS_NAMES order. A transfer model nests its
backbone as one layer named BACKBONE_NAME, after a layer that maps [0, 1] to the range the
backbone was trained on.
"""
import copy
import dataclasses
import os
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
from tf_keras.src.applications import efficientnet as keras_efficientnet

from models import architectures, features

BACKBONE_NAME = "backbone"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
MOBILENET_V2_WEIGHTS = os.path.join(WEIGHTS_DIR, "mobilenet_v2_1.0_224_no_top.h5")
EFFICIENTNET_LITE0_WEIGHTS = os.path.join(WEIGHTS_DIR, "efficientnet_lite0_imagenet_notop.h5")
# `--weights` values besides a file path.
NO_WEIGHTS = "none"
IMAGENET = "imagenet"
# A fine-tuning depth above the layer count of every backbone here (MobileNetV2 154,
# EfficientNet-Lite0 157): unfreezes all of it.
ALL_LAYERS = 1000
# ImageNet channel means of the Caffe-style preprocessing ResNet50 was trained with.
CAFFE_MEANS = (103.939, 116.779, 123.68)


class WeightsError(ValueError):
    """The requested backbone weights cannot be used; the message says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    build: Callable[[Tuple[int, int, int], Optional[str]], tf.keras.Model]
    # Layers that map Transform's [0, 1] images to the backbone's own input range.
    input_layers: Callable[[], list]
    # Weights shipped in models/weights; None means ImageNet weights come from Keras' download.
    bundled_weights: Optional[str]


def _efficientnet_lite0(input_shape: Tuple[int, int, int],
                        weights: Optional[str]) -> tf.keras.Model:
    """EfficientNet-B0's topology without squeeze-and-excitation and with ReLU6 (Lite0).

    Keras' EfficientNet builder is not public API but is the reference implementation of the
    topology; it was checked on tf-keras 2.16.
    """
    blocks = copy.deepcopy(keras_efficientnet.DEFAULT_BLOCKS_ARGS)
    for block in blocks:
        block["se_ratio"] = 0.0
    model = keras_efficientnet.EfficientNet(
        1.0, 1.0, 224, activation="relu6", blocks_args=blocks,
        model_name="efficientnet_lite0", include_top=False, weights=None,
        input_shape=input_shape)
    if weights is not None:
        model.load_weights(weights)
    # Lite0 normalises its [0, 255] input as (x - 127) / 128. The Normalization layer after the
    # builder's 1/255 rescaling is pinned to that, after loading: a legacy .h5 may restore
    # its variables without refreshing the tensors the layer computes with.
    normalization = next(layer for layer in model.layers
                         if isinstance(layer, tf.keras.layers.Normalization))
    mean, variance, *rest = normalization.get_weights()
    normalization.set_weights([np.full_like(mean, 127.0 / 255.0),
                               np.full_like(variance, (128.0 / 255.0) ** 2)] + rest)
    normalization.finalize_state()
    return model


def _to_255() -> list:
    return [tf.keras.layers.Rescaling(255.0, name="to_0_255")]


BACKBONES = {
    "mobilenet_v2": Backbone(
        build=lambda shape, weights: tf.keras.applications.MobileNetV2(
            input_shape=shape, include_top=False, weights=weights),
        input_layers=lambda: [tf.keras.layers.Rescaling(2.0, offset=-1.0,
                                                        name="to_mobilenet_range")],
        bundled_weights=MOBILENET_V2_WEIGHTS),
    "efficientnet_lite0": Backbone(
        build=_efficientnet_lite0, input_layers=_to_255,
        bundled_weights=EFFICIENTNET_LITE0_WEIGHTS),
    # EfficientNetB0 rescales and normalises [0, 255] input itself.
    "efficientnet_b0": Backbone(
        build=lambda shape, weights: tf.keras.applications.EfficientNetB0(
            input_shape=shape, include_top=False, weights=weights),
        input_layers=_to_255, bundled_weights=None),
    # Caffe preprocessing also swaps RGB to BGR; Transform's images are grey in all three
    # channels, so subtracting the per-channel means is the whole of it.
    "resnet50": Backbone(
        build=lambda shape, weights: tf.keras.applications.ResNet50(
            input_shape=shape, include_top=False, weights=weights),
        input_layers=lambda: _to_255() + [tf.keras.layers.Normalization(
            mean=list(CAFFE_MEANS), variance=[1.0, 1.0, 1.0], name="caffe_means")],
        bundled_weights=None),
}

def resolve_weights(model_name: str, weights: Optional[str] = None) -> Optional[str]:
    """The weights a model starts from: a local file, IMAGENET (Keras downloads) or None.

    `weights` is what the user asked for: None (the default for the model), NO_WEIGHTS,
    IMAGENET or a path. Refuses what would silently train a transfer model from scratch.
    """
    if model_name == architectures.BASELINE_CNN:
        if weights not in (None, NO_WEIGHTS):
            raise WeightsError("baseline_cnn is trained from scratch; --weights does not apply")
        return None
    if model_name not in BACKBONES:
        raise ValueError(f"unknown model {model_name!r}; choose one of "
                         f"{', '.join(architectures.MODEL_NAMES)}")
    backbone = BACKBONES[model_name]
    if weights == NO_WEIGHTS:
        return None
    if weights is None:
        return backbone.bundled_weights or IMAGENET
    if weights == IMAGENET:
        if model_name == "efficientnet_lite0":
            raise WeightsError("Keras has no download of EfficientNet-Lite0 weights; leave out "
                               "--weights to use the bundled ImageNet weights")
        return IMAGENET
    if not tf.io.gfile.exists(weights) or tf.io.gfile.isdir(weights):
        raise WeightsError(f"weights file not found: {weights}")
    return weights


def check_weights_available(model_name: str, weights: Optional[str] = None) -> None:
    """Fail now, with what to do instead, if the ImageNet weights cannot be downloaded.

    Keras caches a successful download (~/.keras/models), so the Trainer reuses it.
    """
    resolved = resolve_weights(model_name, weights)
    if resolved != IMAGENET:
        return
    try:
        BACKBONES[model_name].build((32, 32, features.CHANNELS), IMAGENET)
    except Exception as error:  # noqa: BLE001  Keras raises bare Exception on URL failures
        raise WeightsError(
            f"{model_name} needs ImageNet weights, and downloading them failed "
            f"({str(error).splitlines()[0][:160]}). Pass --weights PATH to a local no-top "
            f".h5 file, or --weights {NO_WEIGHTS} to train from random weights on purpose"
        ) from None


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
    """Four conv blocks trained from scratch: the reference any transfer model must beat.

    Batch norm's moving statistics use momentum 0.9, not Keras' 0.99: an epoch of a small
    data set is a few dozen steps, and with 0.99 the statistics used at inference still
    carried most of their initial values after the first epochs (eval accuracy at chance
    while training accuracy rose, on cxr3).
    """
    inputs = _inputs(image_size)
    x = augmentation()(inputs)
    for filters in (32, 64, 128, 256):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, _head(x, dropout), name=architectures.BASELINE_CNN)


def build_transfer(model_name: str, image_size: int = features.DEFAULT_IMAGE_SIZE,
                   weights: Optional[str] = None, dropout: float = 0.3) -> tf.keras.Model:
    """An ImageNet backbone (frozen) under a new head; see set_fine_tuning for phase 2."""
    resolved = resolve_weights(model_name, weights)
    backbone_spec = BACKBONES[model_name]
    backbone = backbone_spec.build((image_size, image_size, features.CHANNELS), resolved)
    backbone._name = BACKBONE_NAME  # pylint: disable=protected-access
    backbone.trainable = False
    inputs = _inputs(image_size)
    x = augmentation()(inputs)
    for layer in backbone_spec.input_layers():
        x = layer(x)
    x = backbone(x, training=False)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, _head(x, dropout), name=model_name)


def build_mobilenet_v2(image_size: int = features.DEFAULT_IMAGE_SIZE,
                       weights: Optional[str] = None, dropout: float = 0.3) -> tf.keras.Model:
    return build_transfer("mobilenet_v2", image_size, weights, dropout)


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


def build(name: str, image_size: int = features.DEFAULT_IMAGE_SIZE, dropout: float = 0.3,
          weights: Optional[str] = None) -> tf.keras.Model:
    """The model `name` (architectures.MODEL_NAMES); `weights` as for resolve_weights."""
    if name == architectures.BASELINE_CNN:
        resolve_weights(name, weights)
        return build_baseline_cnn(image_size, dropout)
    if name in BACKBONES:
        return build_transfer(name, image_size, weights, dropout)
    raise ValueError(f"unknown model {name!r}; choose one of "
                     f"{', '.join(architectures.MODEL_NAMES)}")


def has_backbone(model: tf.keras.Model) -> bool:
    return any(layer.name == BACKBONE_NAME for layer in model.layers)
