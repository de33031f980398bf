"""Grad-CAM (Selvaraju et al., 2017) for this project's Keras models.

The target layer may sit inside a nested transfer-learning backbone (builders.BACKBONE_NAME):
the container holding it is rebuilt as a model that also returns the feature map, and the
layers around it are replayed in order, which the constructor checks against the real model.
"""
import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

CONV_LAYER_TYPES = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D,
                    tf.keras.layers.SeparableConv2D)
# Layers that finish a convolution block without changing its grid: the feature map Grad-CAM
# explains is the block's activated output, not the raw convolution.
BLOCK_TAIL_TYPES = (tf.keras.layers.BatchNormalization, tf.keras.layers.ReLU,
                    tf.keras.layers.Activation, tf.keras.layers.LeakyReLU)
BATCH_SIZE = 16  # images per gradient step
# Forward-only passes (predictions, deletion/insertion curves): one image's curves at the
# default 10 steps are 39 images, so they fit in one call.
PREDICT_BATCH_SIZE = 64
_REPLAY_TOLERANCE = 1e-4
_MIN_PROBABILITY = 1e-12


class GradCamError(ValueError):
    """The model or the requested target layer cannot be explained; the message says why."""


@dataclasses.dataclass(frozen=True)
class TargetLayer:
    """A layer addressed by the names of the nested models that lead to it."""
    path: Tuple[str, ...]
    name: str

    @property
    def qualified_name(self) -> str:
        return "/".join(self.path + (self.name,))


def _graph_layers(container: tf.keras.Model) -> List[tf.keras.layers.Layer]:
    """The layers of the model's graph, in order, without layers merely attached as attributes
    (the Trainer attaches its transform layer to the exported model, outside the graph)."""
    return [layer for layer in container.layers if layer.inbound_nodes]


def _walk(container: tf.keras.Model, path: Tuple[str, ...] = ()):
    """(path, container, layer) for every graph layer, depth first, in each model's order."""
    for layer in _graph_layers(container):
        yield path, container, layer
        if isinstance(layer, tf.keras.Model):
            yield from _walk(layer, path + (layer.name,))


def _is_spatial(layer: tf.keras.layers.Layer) -> bool:
    shape = layer.output_shape
    return isinstance(shape, tuple) and len(shape) == 4


def _block_output(container: tf.keras.Model, conv: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
    """The last batch-norm/activation layer that directly follows `conv` in its container."""
    layers = _graph_layers(container)
    block_end = conv
    for layer in layers[layers.index(conv) + 1:]:
        if not (isinstance(layer, BLOCK_TAIL_TYPES) and layer.input is block_end.output):
            break
        block_end = layer
    return block_end


def find_target_layer(model: tf.keras.Model, name: Optional[str] = None) -> TargetLayer:
    """The named layer ('out_relu' or 'backbone/out_relu'), or else the last conv feature map.

    Auto-detection takes the last convolution anywhere in the model, nested backbones
    included, extended through the batch norm and activation that complete its block.
    """
    layers = list(_walk(model))
    if name:
        matches = [(path, layer) for path, _, layer in layers
                   if name in (layer.name, "/".join(path + (layer.name,)))]
        if not matches:
            raise GradCamError(f"no layer named {name!r} in model {model.name!r}")
        path, layer = matches[-1]
        if not _is_spatial(layer):
            raise GradCamError(f"layer {name!r} has output shape {layer.output_shape}; "
                               "Grad-CAM needs a [batch, height, width, channels] feature map")
        return TargetLayer(path, layer.name)
    convolutions = [(path, container, layer) for path, container, layer in layers
                    if isinstance(layer, CONV_LAYER_TYPES)]
    if not convolutions:
        raise GradCamError(f"model {model.name!r} has no convolutional layer to explain")
    path, container, conv = convolutions[-1]
    return TargetLayer(path, _block_output(container, conv).name)


FeatureForward = Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]


def _feature_forward(container: tf.keras.Model, path: Sequence[str],
                     target_name: str) -> FeatureForward:
    """x -> (target feature maps, container output), recursing along the nested path."""
    if not path:
        model = tf.keras.Model(container.inputs,
                               [container.get_layer(target_name).output, container.output])
        return lambda x: tuple(model(x, training=False))
    nested = container.get_layer(path[0])
    nested_forward = _feature_forward(nested, path[1:], target_name)

    def replay(x):
        feature_maps = None
        for layer in _graph_layers(container):
            if isinstance(layer, tf.keras.layers.InputLayer):
                continue
            if layer is nested:
                feature_maps, x = nested_forward(x)
            else:
                x = layer(x, training=False)
        return feature_maps, x

    return replay


def _class_scores(probabilities: tf.Tensor) -> tf.Tensor:
    """Centered logits, z_c - mean_j z_j, recovered from softmax probabilities.

    Softmax is unchanged by adding a constant to every logit, so these are the logits the
    probabilities determine; unlike a probability they do not saturate near 0 or 1, where a
    probability's gradient (and its heatmap) would vanish.
    """
    log_p = tf.math.log(tf.clip_by_value(probabilities, _MIN_PROBABILITY, 1.0))
    return log_p - tf.reduce_mean(log_p, axis=-1, keepdims=True)


@dataclasses.dataclass
class Explanation:
    heatmaps: np.ndarray       # [N, S, S] ReLU'd Grad-CAM at input resolution, max 1 (or all 0)
    signed_maps: np.ndarray    # [N, S, S] the same before ReLU and scaling
    probabilities: np.ndarray  # [N, classes]
    class_ids: np.ndarray      # [N] the class each map explains


class GradCam:
    """Grad-CAM heatmaps of one model at one target layer, at the model's input resolution."""

    def __init__(self, model: tf.keras.Model, target: Optional[TargetLayer] = None):
        self.model = model
        self.target = target or find_target_layer(model)
        self.image_size = int(model.input_shape[1])
        self._forward = _feature_forward(model, self.target.path, self.target.name)
        # Traced once per instance: called eagerly, Keras re-dispatches every layer in Python
        # for each batch, which cost more than the arithmetic (py-spy on the GradCam component).
        # Without AutoGraph: converting the layers' Python (the augmentation layers above all)
        # took longer than the eager calls it replaced; with training=False none needs it.
        image_spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
        self._probabilities = tf.function(lambda x: self.model(x, training=False),
                                          input_signature=[image_spec], autograph=False)
        self._maps = tf.function(self._signed_maps, autograph=False, input_signature=[
            image_spec, tf.TensorSpec([None], tf.int64)])
        self._check_replay()

    def _check_replay(self) -> None:
        """The replayed graph must compute what the model computes, or the maps mean nothing."""
        probe = tf.random.stateless_uniform([2, self.image_size, self.image_size, 3], seed=(1, 2))
        _, replayed = self._forward(probe)
        difference = float(tf.reduce_max(tf.abs(replayed - self.model(probe, training=False))))
        if difference > _REPLAY_TOLERANCE:
            raise GradCamError(
                f"cannot follow model {self.model.name!r} to layer "
                f"{self.target.qualified_name!r} (outputs differ by {difference:.2g}); "
                "choose a target layer in the outer model")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, in batches."""
        return np.concatenate([
            self._probabilities(tf.convert_to_tensor(images[i:i + PREDICT_BATCH_SIZE],
                                                     tf.float32)).numpy()
            for i in range(0, len(images), PREDICT_BATCH_SIZE)])

    def _signed_maps(self, batch: tf.Tensor, class_ids: tf.Tensor
                     ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(signed maps at input resolution, probabilities, explained ids) of one batch;
        a negative class id stands for the predicted class."""
        with tf.GradientTape() as tape:
            feature_maps, probabilities = self._forward(batch)
            ids = tf.where(class_ids < 0, tf.argmax(probabilities, axis=-1), class_ids)
            score = tf.reduce_sum(tf.gather(_class_scores(probabilities), ids, batch_dims=1))
        gradients = tape.gradient(score, feature_maps)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
        signed = tf.einsum("nhwk,nk->nhw", feature_maps, channel_weights)
        signed = tf.image.resize(signed[..., tf.newaxis], [self.image_size] * 2,
                                 method="bilinear")[..., 0]
        return signed, probabilities, ids

    def explain(self, images: np.ndarray, class_ids: Optional[Sequence[int]] = None
                ) -> Explanation:
        """Heatmaps for `class_ids` (default: each image's predicted class)."""
        ids = np.full(len(images), -1, np.int64) if class_ids is None \
            else np.asarray(class_ids, np.int64)
        parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, len(images), BATCH_SIZE):
            signed, probabilities, explained = self._maps(
                tf.convert_to_tensor(images[start:start + BATCH_SIZE], tf.float32),
                tf.constant(ids[start:start + BATCH_SIZE]))
            parts.append((signed.numpy(), probabilities.numpy(), explained.numpy()))
        signed_maps = np.concatenate([p[0] for p in parts])
        heatmaps = np.maximum(signed_maps, 0.0)
        peaks = heatmaps.max(axis=(1, 2), keepdims=True)
        heatmaps = np.divide(heatmaps, peaks, out=np.zeros_like(heatmaps), where=peaks > 0)
        return Explanation(heatmaps, signed_maps, np.concatenate([p[1] for p in parts]),
                           np.concatenate([p[2] for p in parts]))


def randomized_copy(model: tf.keras.Model, seed: int = 0) -> tf.keras.Model:
    """The same architecture with freshly initialised weights (Adebayo et al., 2018).

    Seeded so the sanity check is reproducible. Only the graph is cloned: layers attached as
    attributes (the Trainer's transform layer) cannot be rebuilt from a config.
    """
    tf.keras.utils.set_random_seed(seed)
    graph_only = tf.keras.Model(model.inputs, model.outputs, name=model.name)
    return tf.keras.models.clone_model(graph_only)
