"""TF Serving warm-up requests for a pushed version.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
PredictionLog protos) when it loads a version, before the version takes traffic, so the
first real request does not pay for building the graph and its kernels. The requests here
carry a synthetic grey PNG through the `serving_default` signature at batch sizes 1 and 8;
the Pusher replays the written file through the model before the version goes live.
"""
import os
from typing import List, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from models import assets_extra, features

WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = f"{assets_extra.DIR}/{WARMUP_FILE}"
BATCH_SIZES = (1, 8)
IMAGE_SIDE = 256


class WarmupError(Exception):
    """The warm-up file cannot be read back or the model does not answer it."""


def sample_png(side: int = IMAGE_SIDE) -> bytes:
    """A smooth grey image (a bright ellipse on a dark field): decodes like an X-ray PNG and
    carries no patient data."""
    y, x = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
    field = np.clip(1.2 - (x / 0.8) ** 2 - (y / 0.9) ** 2, 0, 1)
    pixels = (field * 200 + 20).astype(np.uint8)[..., None]
    return tf.io.encode_png(pixels).numpy()


def requests(model_name: str, batch_sizes: Sequence[int] = BATCH_SIZES
             ) -> List[prediction_log_pb2.PredictionLog]:
    image = sample_png()
    logs = []
    for batch in batch_sizes:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = features.SERVING_SIGNATURE
        request.inputs[features.SERVING_INPUT].CopyFrom(
            tf.make_tensor_proto([image] * batch, dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write(version_dir: str, model_name: str) -> str:
    """Writes <version_dir>/assets.extra/tf_serving_warmup_requests; returns its path."""
    path = os.path.join(version_dir, WARMUP_PATH)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in requests(model_name):
            writer.write(log.SerializeToString())
    return path


def read(path: str) -> List[prediction_log_pb2.PredictionLog]:
    try:
        return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
                for record in tf.data.TFRecordDataset(path)]
    except (tf.errors.OpError, ValueError) as error:
        raise WarmupError(f"cannot read the warm-up file {path}: "
                          f"{str(error).splitlines()[0]}") from None


def replay(path: str, model_dir: str) -> int:
    """Runs every request of the file through the SavedModel's signature, as TF Serving
    does when it loads the version; returns how many requests answered."""
    logs = read(path)
    if not logs:
        raise WarmupError(f"the warm-up file {path} holds no request")
    signatures = tf.saved_model.load(model_dir).signatures
    for index, log in enumerate(logs):
        request = log.predict_log.request
        if request.model_spec.signature_name not in signatures:
            raise WarmupError(f"warm-up request {index} names signature "
                              f"{request.model_spec.signature_name!r}, which the model lacks")
        inputs = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
        batch = len(next(iter(inputs.values())))
        try:
            outputs = signatures[request.model_spec.signature_name](
                **{key: tf.constant(value) for key, value in inputs.items()})
        except (tf.errors.OpError, TypeError, ValueError) as error:
            raise WarmupError(f"the model fails warm-up request {index}: "
                              f"{str(error).splitlines()[0]}") from None
        shape = tuple(outputs[features.PROBABILITIES_OUTPUT].shape)
        if shape != (batch, features.NUM_CLASSES):
            raise WarmupError(f"warm-up request {index} of batch {batch} returned "
                              f"probabilities of shape {shape}")
    return len(logs)
