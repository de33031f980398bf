"""The server's TensorFeeder: request arrays reach the model as the tensors tf.constant would
build, without the Python objects TensorFlow 2.16 on Python 3.11 keeps for every EagerTensor
built from a Python value (tensorflow/tensorflow#62551)."""
import gc
import glob
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE_DIR
from models import features
from serving import server

CALLS = 2000


def _blocks_kept_per_call(make, calls: int = CALLS) -> float:
    for _ in range(20):  # first calls trace and cache
        make()
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(calls):
        make()
    gc.collect()
    return (sys.getallocatedblocks() - before) / calls


def _image_batch() -> np.ndarray:
    paths = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:4]
    batch = np.empty(len(paths), dtype=object)
    for index, path in enumerate(paths):
        with open(path, "rb") as f:
            batch[index] = f.read()
    return batch


@pytest.mark.parametrize("array, dtype", [
    (_image_batch(), tf.string),
    (np.arange(12, dtype=np.float32).reshape(3, 4), tf.float32),
    (np.array(7, dtype=np.int64), tf.int64),
])
def test_feeder_gives_the_tensor_tf_constant_gives(array, dtype):
    feeder = server.TensorFeeder()
    assert feeder.feeds(array, dtype)
    fed = feeder.tensor(array, dtype)
    expected = tf.constant(array, dtype)
    assert fed.dtype == expected.dtype and fed.shape == expected.shape
    np.testing.assert_array_equal(fed.numpy(), expected.numpy())


@pytest.mark.parametrize("array, dtype", [
    (np.array(["text, not bytes"], dtype=object), tf.string),
    (np.array([b"bytes", 3], dtype=object), tf.string),
    (np.arange(3, dtype=np.int64), tf.float32),
])
def test_feeder_leaves_arrays_that_need_converting_to_tf_constant(array, dtype):
    assert not server.TensorFeeder.feeds(array, dtype)


def test_feeder_keeps_no_python_objects_per_call():
    feeder, batch = server.TensorFeeder(), _image_batch()
    assert _blocks_kept_per_call(lambda: feeder.tensor(batch, tf.string)) < 0.2
    assert feeder._slot_count == 1  # one caller at a time: one slot, reused


def test_servable_feeds_request_arrays_through_its_feeder(pushed_model_base):
    servable = server.Servable(pushed_model_base, os.path.basename(pushed_model_base))
    outputs = servable.predict(features.SERVING_SIGNATURE,
                               {features.SERVING_INPUT: _image_batch()[:2]})
    assert outputs[features.PROBABILITIES_OUTPUT].shape[0] == 2
    assert servable._feeder._slot_count == 1  # warm-up and this request shared one slot
