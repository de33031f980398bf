"""Temperature scaling, fitted on the eval split and folded into the model's last layer.

A network trained with cross-entropy is usually over-confident: among images it calls with
probability 0.9, fewer than 90% are right. Dividing the logits by one temperature T > 1,
chosen to minimise the eval split's negative log-likelihood, fixes most of that without
changing any prediction's class (Guo et al., 2017). The head is a softmax Dense layer, so
softmax(z / T) is the same layer with its kernel and bias divided by T: folding T into the
weights puts the calibrated probabilities into everything that loads the model (the
SavedModel's signatures, TF Serving, Grad-CAM, the ONNX and TFLite exports) with no new layer.
"""
import numpy as np
import tensorflow as tf
from scipy import optimize

from models import features

# Temperatures outside this range mean the eval split is too small or the model degenerate.
TEMPERATURE_RANGE = (0.05, 20.0)
_MIN_PROBABILITY = 1e-12


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """The logits up to a constant per row, which softmax ignores."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _MIN_PROBABILITY, 1.0))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), from the probabilities at temperature 1."""
    scaled = log_probabilities(probabilities) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    rows = np.arange(len(labels))
    return float(-log_probabilities(probabilities)[rows, np.asarray(labels)].mean())


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels`."""
    if not len(labels):
        raise ValueError("cannot fit a temperature on an empty split")
    low, high = np.log(TEMPERATURE_RANGE)
    result = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(labels, apply_temperature(probabilities,
                                                                         np.exp(log_t))),
        bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def head(model: tf.keras.Model) -> tf.keras.layers.Dense:
    """The softmax Dense layer every builder ends with (models/builders.py)."""
    layer = model.get_layer(features.PROBABILITIES_OUTPUT)
    if not isinstance(layer, tf.keras.layers.Dense) or \
            layer.activation is not tf.keras.activations.softmax:
        raise ValueError(f"the model's {features.PROBABILITIES_OUTPUT!r} layer is not a "
                         "softmax Dense layer; temperature cannot be folded into it")
    return layer


def fold_temperature(model: tf.keras.Model, temperature: float) -> None:
    """Divide the head's kernel and bias by `temperature`: the model now outputs
    softmax(logits / temperature)."""
    layer = head(model)
    layer.kernel.assign(layer.kernel / temperature)
    layer.bias.assign(layer.bias / temperature)
