"""Int8 weight rounding for convolutions, chosen on training images.

TFLite rounds every int8 weight to the nearest step of its output channel's scale
(max |w| / 127, after batch norm is folded in). A depthwise channel has only kh * kw weights,
and one large tap makes the step coarse for the others: on cxr3's MobileNetV2 the first
depthwise convolution alone turned the top class of 9 of 144 test images. Nearest rounding
is not the best rounding for a layer's output, though: neighbouring taps see nearly the same
input, so rounding one up and another down cancels most of the error (AdaRound's
observation, Nagel et al. 2020). For each output channel of every Conv2D and
DepthwiseConv2D this module picks, weight by weight, the rounding (down or up) that
minimises the channel's mean squared output error on real inputs, then moves the remaining
mean error into the bias (bias correction). The new weights lie on TFLite's own int8 grid, so
its quantizer keeps them. Dense layers keep TFLite's rounding.

The float model changes by about what its int8 export would anyway; the export is still
checked against the untouched SavedModel.
"""
import dataclasses
from typing import Callable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

INT8_WEIGHT_LIMIT = 127  # TFLite int8 weights: symmetric, zero point 0, [-127, 127]
MAX_SWEEPS = 20
# Added to E[p p^T]'s diagonal, as a share of its mean (GPTQ's dampening): deep layers see
# fewer positions than they have inputs, and an undamped rounding fits those few.
DAMPING = 0.01
BATCH = 4  # images per forward pass: the first layers' input patches are large


@dataclasses.dataclass
class RoundedLayer:
    layer: str
    channels: int
    output_mse_nearest: float  # TFLite's own rounding, on the rounding images
    output_mse_chosen: float


def quantized_layers(model: tf.keras.Model) -> List[Tuple[tf.keras.layers.Layer,
                                                           Optional[tf.keras.layers.Layer]]]:
    """Every Conv2D and DepthwiseConv2D, in nested models too, with the BatchNormalization
    TFLite folds into it (its only consumer, with no activation between), or None."""
    found = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            found.extend(quantized_layers(layer))
        elif (isinstance(layer, tf.keras.layers.DepthwiseConv2D) or (
                type(layer) is tf.keras.layers.Conv2D and layer.groups == 1)):
            consumers = [node.outbound_layer for node in layer.outbound_nodes]
            folds = (len(consumers) == 1 and layer.get_config()["activation"] == "linear"
                     and isinstance(consumers[0], tf.keras.layers.BatchNormalization)
                     and consumers[0].scale and consumers[0].center)  # gamma and beta to set
            batch_norm = consumers[0] if folds else None
            found.append((layer, batch_norm))
    return found


def layer_input(model: tf.keras.Model, layer: tf.keras.layers.Layer) -> Callable:
    """images -> the input `layer` sees inside `model` (in inference mode)."""
    if any(candidate is layer for candidate in model.layers):
        return tf.keras.Model(model.inputs, layer.input)
    for nested in model.layers:
        if isinstance(nested, tf.keras.Model) and _contains(nested, layer):
            to_nested = tf.keras.Model(model.inputs, nested.inbound_nodes[-1].input_tensors)
            inside = layer_input(nested, layer)
            return lambda images: inside(to_nested(images, training=False), training=False)
    raise ValueError(f"{layer.name} is not in {model.name}")


def _contains(model: tf.keras.Model, layer: tf.keras.layers.Layer) -> bool:
    return any(candidate is layer or (isinstance(candidate, tf.keras.Model)
                                      and _contains(candidate, layer))
               for candidate in model.layers)


def _input_moments(inputs: Callable, layer: tf.keras.layers.Layer,
                   images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """E[p p^T] and E[p] over every kernel-sized input patch p the layer reads: per input
    channel for a depthwise layer ([channels, taps, taps], [channels, taps]), over all input
    channels for a convolution ([taps, taps], [taps]; taps ordered as the kernel's rows)."""
    kernel_height, kernel_width = layer.kernel_size
    stride_y, stride_x = layer.strides
    dilation_y, dilation_x = layer.dilation_rate
    depthwise = isinstance(layer, tf.keras.layers.DepthwiseConv2D)
    second = first = 0.0
    count = 0
    for start in range(0, len(images), BATCH):
        x = inputs(images[start:start + BATCH])
        patches = tf.image.extract_patches(
            x, [1, kernel_height, kernel_width, 1], [1, stride_y, stride_x, 1],
            [1, dilation_y, dilation_x, 1], layer.padding.upper()).numpy()
        if depthwise:
            patches = patches.reshape(-1, kernel_height * kernel_width, x.shape[-1])
            second = second + np.einsum("pic,pjc->cij", patches, patches, dtype=np.float64)
            first = first + patches.sum(axis=0, dtype=np.float64).T
        else:
            patches = patches.reshape(-1, patches.shape[-1])
            second = second + (patches.T @ patches).astype(np.float64)
            first = first + patches.sum(axis=0, dtype=np.float64)
        count += len(patches)
    return second / count, first / count


def best_rounding(weights: np.ndarray, second_moment: np.ndarray) -> np.ndarray:
    """Int8 steps [channels, taps] for float weights [channels, taps], each tap rounded down
    or up so that e^T E[p p^T] e (e: the channel's weight error) is smallest, by coordinate
    descent from nearest rounding. E[p p^T] is [channels, taps, taps] (depthwise) or one
    [taps, taps] for all channels. The largest tap stays at +-127: it sets TFLite's scale."""
    scale = np.abs(weights).max(axis=1, keepdims=True) / INT8_WEIGHT_LIMIT
    scale = np.where(scale == 0, 1.0, scale)
    exact = weights / scale
    steps = np.round(exact)
    error = (steps - exact) * scale
    # error @ E[p p^T] per channel, kept up to date as taps change: the loss's gradient.
    gradient = (error @ second_moment if second_moment.ndim == 2
                else np.einsum("ci,cij->cj", error, second_moment))
    largest = np.abs(weights).argmax(axis=1)
    for _ in range(MAX_SWEEPS):
        changed = False
        for tap in range(weights.shape[1]):
            other = np.where(steps[:, tap] > exact[:, tap], np.floor(exact[:, tap]),
                             np.ceil(exact[:, tap]))
            move = (other - steps[:, tap]) * scale[:, 0]
            gain = 2 * move * gradient[:, tap] + move ** 2 * second_moment[..., tap, tap]
            better = ((gain < -1e-18) & (np.abs(other) <= INT8_WEIGHT_LIMIT)
                      & (largest != tap) & (move != 0))
            if better.any():
                steps[better, tap] = other[better]
                error[better, tap] += move[better]
                row = second_moment[..., tap, :]
                gradient[better] += move[better, None] * (row if row.ndim == 1 else row[better])
                changed = True
        if not changed:
            break
    return steps


def _damped(second_moment: np.ndarray) -> np.ndarray:
    diagonal = np.diagonal(second_moment, axis1=-2, axis2=-1)
    return second_moment + (DAMPING * diagonal.mean(axis=-1)[..., None, None]
                            * np.eye(second_moment.shape[-1]))


def _output_mse(error: np.ndarray, second_moment: np.ndarray) -> float:
    """Mean over output channels of e^T E[p p^T] e."""
    return float(np.mean(np.sum((error @ second_moment if second_moment.ndim == 2 else
                                 np.einsum("ci,cij->cj", error, second_moment)) * error,
                                axis=-1)))


def round_weights(model: tf.keras.Model, images: np.ndarray) -> List[RoundedLayer]:
    """Rewrites every convolution kernel (and its bias or batch-norm offset) in place, layer
    by layer, each measured on the inputs the already rounded layers before it produce."""
    rounded = []
    for layer, batch_norm in quantized_layers(model):
        second, first = _input_moments(layer_input(model, layer), layer, images)
        kernel, *bias = layer.get_weights()
        if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
            # kernel [kh, kw, channels, multiplier]: output channel c * multiplier + m reads
            # input channel c only.
            outputs = kernel.shape[2] * kernel.shape[3]
            source = np.repeat(np.arange(kernel.shape[2]), kernel.shape[3])
            second, first = second[source], first[source]
        else:
            outputs = kernel.shape[3]  # kernel [kh, kw, inputs, outputs]
        fold = np.ones(outputs)
        if batch_norm is not None:
            gamma, beta, mean, variance = batch_norm.get_weights()
            fold = gamma / np.sqrt(variance + batch_norm.epsilon)
        # TFLite's scales are per output channel, on the folded weights.
        weights = kernel.reshape(-1, outputs).T.astype(np.float64) * fold[:, None]
        scale = np.abs(weights).max(axis=1, keepdims=True) / INT8_WEIGHT_LIMIT
        chosen = best_rounding(weights, _damped(second)) * scale
        nearest_error = np.round(weights / np.where(scale == 0, 1, scale)) * scale - weights
        mean_error = np.sum((chosen - weights) * first, axis=-1)
        new_kernel = (chosen / np.where(fold == 0, 1, fold)[:, None]).T.reshape(kernel.shape)
        if batch_norm is not None:
            batch_norm.set_weights([gamma, beta - mean_error, mean, variance])
        elif bias:
            bias = [bias[0] - mean_error]
        layer.set_weights([new_kernel.astype(kernel.dtype), *bias])
        rounded.append(RoundedLayer(layer.name, outputs, _output_mse(nearest_error, second),
                                    _output_mse(chosen - weights, second)))
    return rounded
