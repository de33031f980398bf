"""The gate that says whether an input looks like the frontal chest films the model learned.

Whatever it is given, the classifier answers COVID-19, Pneumonia or Normal. The gate scores
each input by how far the model's own penultimate features (the input of the final Dense
layer: the backbone's globally pooled features) lie from those of the training split, with
no outside data:

- fit on the training split: the square root of each feature (they are averages of
  non-negative activations; the root makes them closer to Gaussian), then a Gaussian whose
  covariance keeps the top principal directions and treats the rest as isotropic
  (probabilistic PCA, Tipping & Bishop 1999): stable with fewer images than features, and
  small inside the SavedModel;
- distance: the Mahalanobis distance to that Gaussian;
- threshold, chosen on the eval split (films the model was not fitted on): the smallest
  distance that flags at most MAX_FLAGGED_EVAL of the eval split's chest films;
- `chest_xray_score`: the share of eval chest films at least as far from the training films
  as the input (1: closer than all of them, 0: further than any); `is_chest_xray`: distance
  within the threshold, so flagged inputs score at most about MAX_FLAGGED_EVAL.

Both run inside the exported serving signature (GateModule), so TF Serving clients get them.
"""
import dataclasses
import math
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from models import features

MAX_FLAGGED_EVAL = 0.02  # at most this share of the eval split's chest films is flagged
COMPONENTS = 32          # principal directions kept; the rest of the variance is isotropic
_VARIANCE_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class GateFit:
    """Everything the gate needs at serving time (numpy, float64)."""
    mean: np.ndarray          # [d] of the root features
    components: np.ndarray    # [d, k] orthonormal principal directions
    variances: np.ndarray     # [k] variance along each
    residual_variance: float  # per dimension, outside the k directions
    threshold: float          # largest distance still called a chest X-ray
    eval_distances: np.ndarray  # sorted, for the score

    def distances(self, penultimate: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of raw penultimate features."""
        centred = np.sqrt(np.maximum(penultimate, 0.0)) - self.mean
        projected = centred @ self.components
        outside = np.sum(centred ** 2, axis=1) - np.sum(projected ** 2, axis=1)
        return (np.sum(projected ** 2 / self.variances, axis=1)
                + np.maximum(outside, 0.0) / self.residual_variance)

    def scores(self, penultimate: np.ndarray) -> np.ndarray:
        distances = self.distances(penultimate)
        return np.mean(self.eval_distances[None, :] >= distances[:, None], axis=1)

    def summary(self) -> Dict[str, float]:
        return {"dimensions": int(self.mean.shape[0]), "components": int(self.variances.size),
                "threshold": float(self.threshold),
                "eval_images": int(self.eval_distances.size),
                "eval_flagged": float(np.mean(self.eval_distances > self.threshold))}


def penultimate_layer(model: tf.keras.Model) -> tf.keras.layers.Layer:
    """The final Dense layer (builders.py names it after the probabilities output)."""
    return model.get_layer(features.PROBABILITIES_OUTPUT)


def with_features(model: tf.keras.Model) -> tf.keras.Model:
    """The same model (same weights) answering [probabilities, penultimate features]."""
    return tf.keras.Model(model.inputs, [model.output, penultimate_layer(model).input],
                          name=f"{model.name}_with_features")


def penultimate_features(model: tf.keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    """Penultimate features (inference mode) of every image of a (images, labels) dataset."""
    feature_model = tf.keras.Model(model.inputs, penultimate_layer(model).input)
    batches = [feature_model(images, training=False).numpy() for images, _ in dataset]
    if not batches:
        raise ValueError("no images to fit the chest X-ray gate on")
    return np.concatenate(batches).astype(np.float64)


def _principal(roots: np.ndarray, components: int) -> Tuple[np.ndarray, np.ndarray,
                                                             np.ndarray, float]:
    mean = roots.mean(axis=0)
    centred = roots - mean
    count, dimensions = centred.shape
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    spectrum = singular ** 2 / max(count - 1, 1)
    k = max(1, min(components, count - 1, dimensions - 1))
    total = float(np.sum(centred ** 2)) / max(count - 1, 1)
    residual = max((total - float(spectrum[:k].sum())) / (dimensions - k), _VARIANCE_FLOOR)
    return mean, right[:k].T, np.maximum(spectrum[:k], residual), residual


def threshold_for(eval_distances: np.ndarray, max_flagged: float = MAX_FLAGGED_EVAL) -> float:
    """The smallest eval distance d with at most max_flagged of the eval films beyond d."""
    ordered = np.sort(eval_distances)
    allowed = math.floor(max_flagged * len(ordered))
    return float(ordered[len(ordered) - 1 - allowed])


def fit(train_features: np.ndarray, eval_features: np.ndarray,
        components: int = COMPONENTS) -> GateFit:
    """The gate from penultimate features of the training split and of the eval split."""
    if len(train_features) < 2 or len(eval_features) < 1:
        raise ValueError(f"the chest X-ray gate needs at least 2 training and 1 eval image, "
                         f"got {len(train_features)} and {len(eval_features)}")
    mean, directions, variances, residual = _principal(
        np.sqrt(np.maximum(train_features, 0.0)), components)
    partial = GateFit(mean, directions, variances, residual, math.inf, np.zeros(0))
    eval_distances = np.sort(partial.distances(eval_features))
    return dataclasses.replace(partial, threshold=threshold_for(eval_distances),
                               eval_distances=eval_distances)


def fit_model(model: tf.keras.Model, train: tf.data.Dataset, eval_: tf.data.Dataset
              ) -> GateFit:
    """Trainer's hook: fit the gate on the trained model's features of both splits."""
    return fit(penultimate_features(model, train), penultimate_features(model, eval_))


class GateModule(tf.Module):
    """The fitted gate as constants of the SavedModel: penultimate features -> outputs."""

    def __init__(self, gate: GateFit):
        super().__init__(name="chest_xray_gate")
        self.mean = tf.constant(gate.mean, tf.float32)
        self.components = tf.constant(gate.components, tf.float32)
        self.variances = tf.constant(gate.variances, tf.float32)
        self.residual_variance = tf.constant(gate.residual_variance, tf.float32)
        self.threshold = tf.constant(gate.threshold, tf.float32)
        self.eval_distances = tf.constant(gate.eval_distances, tf.float32)

    def __call__(self, penultimate: tf.Tensor) -> Dict[str, tf.Tensor]:
        centred = tf.sqrt(tf.maximum(penultimate, 0.0)) - self.mean
        projected = tf.matmul(centred, self.components)
        inside = tf.reduce_sum(projected ** 2, axis=1)
        outside = tf.maximum(tf.reduce_sum(centred ** 2, axis=1) - inside, 0.0)
        distances = (tf.reduce_sum(projected ** 2 / self.variances, axis=1)
                     + outside / self.residual_variance)
        score = tf.reduce_mean(tf.cast(
            self.eval_distances[tf.newaxis, :] >= distances[:, tf.newaxis], tf.float32), axis=1)
        return {features.CHEST_XRAY_SCORE_OUTPUT: score,
                features.IS_CHEST_XRAY_OUTPUT: distances <= self.threshold}

