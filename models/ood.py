"""The gate that says whether an input looks like the frontal chest films the model learned.

Whatever it is given, the classifier answers COVID-19, Pneumonia or Normal. The gate scores
each input by how far the model's own features lie from those of the training split, with
no outside data. Two layers are watched, each globally averaged over the image:

- the penultimate features (the input of the final Dense layer): what the classifier uses;
- a mid-level feature map, the end of the backbone's second-to-last stage (the last map at
  twice the final map's resolution with another channel count: MobileNetV2's
  block_13_expand_relu, EfficientNet's block6a_expand_activation, the baseline CNN's third
  block). Its statistics follow the orientation and texture of local structure (ribs,
  clavicles, film grain): on cxr4 it flagged every rotated and inverted film of the
  development set, the penultimate features 69 % of the rotated ones.

Per layer, fitted on the training split: the square root of each feature (averages of
non-negative activations; the root makes them closer to Gaussian), then a Gaussian whose
covariance keeps the top principal directions and treats the rest as isotropic
(probabilistic PCA, Tipping & Bishop 1999; stable with fewer images than features and small
inside the SavedModel), and the Mahalanobis distance to it, divided by its median over the
eval split. An input's distance is the larger of the two layers'. The threshold is chosen on
the eval split (films the model was not fitted on): the smallest distance that flags at most
MAX_FLAGGED_EVAL of its chest films.

`chest_xray_score` is the share of eval chest films at least as far from the training films as
the input (1: closer than all of them, 0: further than any), interpolated linearly between
the eval films' distances so that it moves smoothly with the input, not in steps that batching
noise could flip for an input at an eval film's own distance; `is_chest_xray` is the distance
within the threshold, so flagged inputs score at most about MAX_FLAGGED_EVAL. Both run inside
the exported serving signature (GateModule), so TF Serving clients get them.
"""
import dataclasses
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from models import builders, features

MAX_FLAGGED_EVAL = 0.02  # at most this share of the eval split's chest films is flagged
COMPONENTS = 32          # principal directions kept per layer; the rest is isotropic
_VARIANCE_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class LayerFit:
    """One layer's Gaussian (numpy, float64), on the root of its pooled features."""
    mean: np.ndarray          # [d]
    components: np.ndarray    # [d, k] orthonormal principal directions
    variances: np.ndarray     # [k] variance along each
    residual_variance: float  # per dimension, outside the k directions
    scale: float = 1.0        # the eval split's median distance

    def distances(self, pooled: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row, divided by the eval median."""
        centred = np.sqrt(np.maximum(pooled, 0.0)) - self.mean
        projected = centred @ self.components
        outside = np.sum(centred ** 2, axis=1) - np.sum(projected ** 2, axis=1)
        return (np.sum(projected ** 2 / self.variances, axis=1)
                + np.maximum(outside, 0.0) / self.residual_variance) / self.scale


def score_curve(eval_distances: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(distance, score) points of the score: 1 at distance 0, falling by 1/n at each of the n
    sorted eval distances, 0 from the furthest on."""
    n = eval_distances.size
    return (np.concatenate([[0.0], np.sort(eval_distances)]),
            1.0 - np.arange(n + 1, dtype=np.float64) / n)


@dataclasses.dataclass(frozen=True)
class GateFit:
    """Everything the gate needs at serving time."""
    layers: Tuple[LayerFit, ...]  # penultimate, mid-level
    threshold: float              # largest distance still called a chest X-ray
    eval_distances: np.ndarray    # sorted, for the score
    layer_names: Tuple[str, ...] = ()

    def distances(self, pooled: Sequence[np.ndarray]) -> np.ndarray:
        return np.max([layer.distances(values) for layer, values in zip(self.layers, pooled)],
                      axis=0)

    def scores(self, pooled: Sequence[np.ndarray]) -> np.ndarray:
        distances, levels = score_curve(self.eval_distances)
        return np.interp(self.distances(pooled), distances, levels)

    def summary(self) -> Dict[str, object]:
        return {"layers": list(self.layer_names),
                "dimensions": [int(layer.mean.shape[0]) for layer in self.layers],
                "components": [int(layer.variances.size) for layer in self.layers],
                "threshold": float(self.threshold),
                "eval_images": int(self.eval_distances.size),
                "eval_flagged": float(np.mean(self.eval_distances > self.threshold))}


def penultimate_layer(model: tf.keras.Model) -> tf.keras.layers.Layer:
    """The final Dense layer (builders.py names it after the probabilities output)."""
    return model.get_layer(features.PROBABILITIES_OUTPUT)


def _pooling_layer(model: tf.keras.Model) -> tf.keras.layers.GlobalAveragePooling2D:
    return next(layer for layer in model.layers
                if isinstance(layer, tf.keras.layers.GlobalAveragePooling2D))


def mid_level_layer(model: tf.keras.Model) -> tf.keras.layers.Layer:
    """The end of the second-to-last stage: the last layer (inside the backbone, if any) whose
    output has twice the final feature map's height and another channel count."""
    _, height, _, channels = _pooling_layer(model).input_shape
    container = model.get_layer(builders.BACKBONE_NAME) if builders.has_backbone(model) \
        else model
    # model.layers also lists layers attached as attributes and never called in the graph
    # (the Transform layer the serving signatures use): they have no output shape.
    candidates = [layer for layer in container.layers if layer.inbound_nodes
                  and isinstance(layer.output_shape, tuple) and len(layer.output_shape) == 4
                  and layer.output_shape[1] == 2 * height
                  and layer.output_shape[-1] != channels]
    if not candidates:
        raise ValueError(f"{model.name} has no feature map at twice the final map's size")
    return candidates[-1]


def _chain(model: tf.keras.Model) -> List[Tuple[tf.keras.layers.Layer, tf.Tensor]]:
    """The layers from the model's input to its output, each with its input tensor, followed
    back through the graph (model.layers also lists layers attached as attributes, such as
    the Trainer's Transform layer, which are no part of it)."""
    chain, tensor = [], model.outputs[0]
    while True:
        layer, node_index, _ = tensor._keras_history  # pylint: disable=protected-access
        if isinstance(layer, tf.keras.layers.InputLayer):
            return chain[::-1]
        (tensor,) = layer._inbound_nodes[node_index].keras_inputs  # noqa: SLF001
        chain.append((layer, tensor))


def feature_model(model: tf.keras.Model) -> tf.keras.Model:
    """The same model (same weights, one forward pass) answering [probabilities, pooled
    penultimate features, pooled mid-level features]."""
    mid = mid_level_layer(model)
    pool = tf.keras.layers.GlobalAveragePooling2D(name="gate_mid_level_pool")
    chain = _chain(model)
    head = penultimate_layer(model)
    if not builders.has_backbone(model):
        penultimate = next(tensor for layer, tensor in chain if layer is head)
        return tf.keras.Model(model.inputs, [model.outputs[0], penultimate, pool(mid.output)],
                              name="with_gate_features")
    backbone = model.get_layer(builders.BACKBONE_NAME)
    inner = tf.keras.Model(backbone.inputs, [backbone.output, mid.output])
    # Replay the chain of layers with a backbone that also answers the mid-level map.
    tensor, mid_output, penultimate = model.inputs[0], None, None
    for layer, _ in chain:
        if layer is backbone:
            tensor, mid_output = inner(tensor, training=False)
            continue
        if layer is head:
            penultimate = tensor
        tensor = layer(tensor)
    return tf.keras.Model(model.inputs, [tensor, penultimate, pool(mid_output)],
                          name="with_gate_features")


def predict_batches(model: tf.keras.Model, dataset: tf.data.Dataset
                    ) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(labels, [each model output]) of every (images, labels) batch of a finite dataset,
    inference mode, the forward pass traced once: called eagerly, Keras dispatches every
    layer in Python for each batch (the Trainer's passes over both splits ran at about half
    the speed)."""
    images_spec = dataset.element_spec[0]
    forward = tf.function(lambda images: model(images, training=False), autograph=False,
                          input_signature=[tf.TensorSpec(images_spec.shape, images_spec.dtype)])
    labels, outputs = [], []
    for images, batch_labels in dataset:
        outputs.append([values.numpy() for values in tf.nest.flatten(forward(images))])
        labels.append(batch_labels.numpy().reshape(-1))
    if not outputs:
        raise ValueError("no images to predict")
    return np.concatenate(labels), [np.concatenate([batch[i] for batch in outputs])
                                    for i in range(len(outputs[0]))]


def pooled_features(model: tf.keras.Model, dataset: tf.data.Dataset) -> List[np.ndarray]:
    """[penultimate, mid-level] pooled features (inference mode) of a (images, labels)
    dataset's images."""
    try:
        _, outputs = predict_batches(feature_model(model), dataset)
    except ValueError:
        raise ValueError("no images to fit the chest X-ray gate on") from None
    return outputs[1:]


def _fit_layer(pooled: np.ndarray, components: int) -> LayerFit:
    roots = np.sqrt(np.maximum(pooled, 0.0))
    mean = roots.mean(axis=0)
    centred = roots - mean
    count, dimensions = centred.shape
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    spectrum = singular ** 2 / max(count - 1, 1)
    k = max(1, min(components, count - 1, dimensions - 1))
    total = float(np.sum(centred ** 2)) / max(count - 1, 1)
    residual = max((total - float(spectrum[:k].sum())) / (dimensions - k), _VARIANCE_FLOOR)
    return LayerFit(mean, right[:k].T, np.maximum(spectrum[:k], residual), residual)


def threshold_for(eval_distances: np.ndarray, max_flagged: float = MAX_FLAGGED_EVAL) -> float:
    """The smallest eval distance d with at most max_flagged of the eval films beyond d."""
    ordered = np.sort(eval_distances)
    allowed = math.floor(max_flagged * len(ordered))
    return float(ordered[len(ordered) - 1 - allowed])


def fit(train: Sequence[np.ndarray], eval_: Sequence[np.ndarray],
        components: int = COMPONENTS, layer_names: Tuple[str, ...] = ()) -> GateFit:
    """The gate from each watched layer's pooled features of the training and eval splits
    (fitted in float64 whatever their type)."""
    train = [np.asarray(values, np.float64) for values in train]
    eval_ = [np.asarray(values, np.float64) for values in eval_]
    if len(train[0]) < 2 or len(eval_[0]) < 1:
        raise ValueError(f"the chest X-ray gate needs at least 2 training and 1 eval image, "
                         f"got {len(train[0])} and {len(eval_[0])}")
    layers = []
    for train_values, eval_values in zip(train, eval_):
        layer = _fit_layer(train_values, components)
        median = float(np.median(layer.distances(eval_values)))
        layers.append(dataclasses.replace(layer, scale=max(median, _VARIANCE_FLOOR)))
    partial = GateFit(tuple(layers), math.inf, np.zeros(0), layer_names)
    eval_distances = np.sort(partial.distances(eval_))
    return dataclasses.replace(partial, threshold=threshold_for(eval_distances),
                               eval_distances=eval_distances)


def layer_names(model: tf.keras.Model) -> Tuple[str, ...]:
    """The watched layers, as GateFit.summary() names them."""
    return penultimate_layer(model).name + " input", mid_level_layer(model).name


def fit_model(model: tf.keras.Model, train: tf.data.Dataset, eval_: tf.data.Dataset
              ) -> GateFit:
    """The gate on the trained model's features of both splits."""
    return fit(pooled_features(model, train), pooled_features(model, eval_),
               layer_names=layer_names(model))


class GateModule(tf.Module):
    """The fitted gate as constants of the SavedModel: pooled features -> the two outputs."""

    def __init__(self, gate: GateFit):
        super().__init__(name="chest_xray_gate")
        self.layers = [{name: tf.constant(getattr(layer, name), tf.float32) for name in
                        ("mean", "components", "variances", "residual_variance", "scale")}
                       for layer in gate.layers]
        self.threshold = tf.constant(gate.threshold, tf.float32)
        curve_distances, curve_scores = score_curve(gate.eval_distances)
        self.curve_distances = tf.constant(curve_distances, tf.float32)
        self.curve_scores = tf.constant(curve_scores, tf.float32)

    @staticmethod
    def _distances(layer: Dict[str, tf.Tensor], pooled: tf.Tensor) -> tf.Tensor:
        centred = tf.sqrt(tf.maximum(pooled, 0.0)) - layer["mean"]
        projected = tf.matmul(centred, layer["components"])
        inside = tf.reduce_sum(projected ** 2, axis=1)
        outside = tf.maximum(tf.reduce_sum(centred ** 2, axis=1) - inside, 0.0)
        return (tf.reduce_sum(projected ** 2 / layer["variances"], axis=1)
                + outside / layer["residual_variance"]) / layer["scale"]

    def _interpolate(self, distances: tf.Tensor) -> tf.Tensor:
        """np.interp on the score curve, in the graph."""
        xs, ys = self.curve_distances, self.curve_scores
        last = tf.shape(xs)[0] - 2
        index = tf.clip_by_value(tf.searchsorted(xs, distances, side="right") - 1, 0, last)
        x0, x1 = tf.gather(xs, index), tf.gather(xs, index + 1)
        y0, y1 = tf.gather(ys, index), tf.gather(ys, index + 1)
        step = tf.clip_by_value((distances - x0) / tf.maximum(x1 - x0, 1e-12), 0.0, 1.0)
        return y0 + step * (y1 - y0)

    def __call__(self, pooled: Sequence[tf.Tensor]) -> Dict[str, tf.Tensor]:
        distances = tf.reduce_max(tf.stack(
            [self._distances(layer, values) for layer, values in zip(self.layers, pooled)]),
            axis=0)
        return {features.CHEST_XRAY_SCORE_OUTPUT: self._interpolate(distances),
                features.IS_CHEST_XRAY_OUTPUT: distances <= self.threshold}
