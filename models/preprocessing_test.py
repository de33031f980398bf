import ctypes
import gc
import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import SAMPLE_DIR
from models import features, preprocessing


def _png(array: np.ndarray, mode: str = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def _gradient(dtype=np.uint8, high=255):
    return np.linspace(0, high, 48 * 64).reshape(48, 64).astype(dtype)


def _check(image, size, lowest_max=0.95):
    assert image.shape == (size, size, 3)
    assert image.dtype == tf.float32
    # Stretched to the full range before resizing; resampling may pull the extremes in a bit.
    assert 0.0 <= float(tf.reduce_min(image)) < 0.05
    assert lowest_max < float(tf.reduce_max(image)) <= 1.0
    np.testing.assert_allclose(image[..., 0], image[..., 2])  # gray in all three channels


def test_decodes_a_real_jpeg_from_the_sample():
    path = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    # A film's brightest pixels are few (labels, wires): the antialiased downsizing averages
    # them with darker neighbours, so the maximum lands below a smooth gradient's.
    _check(preprocessing.decode_image(tf.constant(open(path, "rb").read()), 96), 96,
           lowest_max=0.85)


@pytest.mark.parametrize("array,mode", [
    (_gradient(), "L"),
    (np.stack([_gradient()] * 3, -1), "RGB"),
    (np.dstack([_gradient()] * 3 + [np.full((48, 64), 255, np.uint8)]), "RGBA"),
])
def test_decodes_8_bit_pngs_of_any_channel_count(array, mode):
    _check(preprocessing.decode_image(tf.constant(_png(array, mode)), 32), 32)


def test_12_bit_data_in_a_16_bit_png_is_stretched_not_left_dark():
    image = preprocessing.decode_image(tf.constant(_png(_gradient(np.uint16, 4095))), 32)
    _check(image, 32)
    assert 0.4 < float(tf.reduce_mean(image)) < 0.6


def test_preprocessing_fn_maps_labels_in_the_fixed_class_order():
    path = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    raw = open(path, "rb").read()
    labels = features.CLASS_NAMES + ["Lung_Opacity"]
    outputs = preprocessing.preprocessing_fn(
        {features.IMAGE_KEY: tf.constant([[raw]] * len(labels)),
         features.LABEL_KEY: tf.constant([[label] for label in labels])},
        {"image_size": 40})
    assert outputs[features.IMAGE_XF_KEY].shape == (len(labels), 40, 40, 3)
    assert outputs[features.LABEL_XF_KEY].numpy().tolist() == [0, 1, 2, -1]


def test_metadata_such_as_sex_never_reaches_the_model():
    path = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    raw = open(path, "rb").read()
    metadata = {key: tf.constant([["M"], ["F"]]) for key in features.METADATA_KEYS}
    outputs = preprocessing.preprocessing_fn(
        {features.IMAGE_KEY: tf.constant([[raw]] * 2),
         features.LABEL_KEY: tf.constant([["Normal"]] * 2), **metadata}, {"image_size": 32})
    assert set(outputs) == {features.IMAGE_XF_KEY, features.LABEL_XF_KEY}
    np.testing.assert_array_equal(outputs[features.IMAGE_XF_KEY][0],
                                  outputs[features.IMAGE_XF_KEY][1])


def _heap_in_use() -> int:
    """Bytes glibc's malloc has handed out and not had back (mallinfo2: every arena, and the
    chunks it mmapped)."""
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        pytest.skip("needs glibc 2.33 or newer (mallinfo2)")
    mallinfo2.restype = MallInfo2
    gc.collect()
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def test_a_jpeg_that_fails_to_decode_leaves_no_image_behind():
    """A server answers cut-short and corrupt uploads for as long as it runs: each refusal
    must give back the pixels decoded before the error (TensorFlow's float decoding of a JPEG
    keeps them: 2.3 MB a time for this film)."""
    film = np.linspace(0, 255, 1500 * 1500).reshape(1500, 1500).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(film, "L").save(buffer, "JPEG", quality=90)
    cut = tf.constant(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    decode = tf.function(lambda image_bytes: preprocessing.decode_image(image_bytes, 32))

    def refuse():
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode(cut)

    refuse()  # traces the function
    before = _heap_in_use()
    for _ in range(10):
        refuse()
    assert _heap_in_use() - before < film.size  # ten leaks would be 10 x film.size
