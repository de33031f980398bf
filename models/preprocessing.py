"""Transform's module: raw encoded images and string labels -> model inputs.

The same graph runs in Trainer's input pipeline and inside the exported SavedModel, so a
served image goes through exactly the decoding, resizing and normalisation used in training.
"""
from typing import Any, Dict, Optional

import tensorflow as tf

from models import features


def decode_image(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG/PNG bytes (8/16-bit, gray/RGB/RGBA) -> float32 [size, size, 3] in [0, 1].

    Colour is reduced to luminance (X-rays are grayscale; colour only comes from annotated
    screenshots), each image is min-max stretched so that 12-bit data stored in 16-bit PNGs
    and washed-out scans use the full range, then resized without keeping the aspect ratio
    (padding would add black bars whose shape differs by source, a shortcut to learn).
    """
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        # TensorFlow's decoder leaks the whole decoded image each time a JPEG fails to decode
        # (cut short or corrupt) into any dtype but uint8: 84 KiB per refused 320 x 266 film
        # with TF 2.16, megabytes for a full-size one, for as long as a server runs. Decoding
        # to uint8 and converting gives the same floats without the leak; PNGs keep their
        # 16 bits.
        lambda: tf.image.convert_image_dtype(
            tf.io.decode_image(image_bytes, channels=0, expand_animations=False), tf.float32),
        lambda: tf.io.decode_image(image_bytes, channels=0, dtype=tf.float32,
                                   expand_animations=False))
    image = tf.cond(tf.shape(image)[-1] >= 3,
                    lambda: tf.image.rgb_to_grayscale(image[..., :3]),
                    lambda: image[..., :1])
    low, high = tf.reduce_min(image), tf.reduce_max(image)
    image = (image - low) / tf.maximum(high - low, 1e-6)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.image.grayscale_to_rgb(image)
    image.set_shape([image_size, image_size, features.CHANNELS])
    return image


def label_to_id(labels: tf.Tensor) -> tf.Tensor:
    """Class name -> index in features.CLASS_NAMES (-1 for a name outside the classes)."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(features.CLASS_NAMES), tf.range(features.NUM_CLASSES, dtype=tf.int64)),
        default_value=-1)
    return table.lookup(labels)


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
    image_size = int((custom_config or {}).get("image_size", features.DEFAULT_IMAGE_SIZE))
    image_bytes = tf.reshape(inputs[features.IMAGE_KEY], [-1])
    return {
        features.IMAGE_XF_KEY: tf.map_fn(
            lambda b: decode_image(b, image_size), image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, features.CHANNELS],
                                              tf.float32)),
        features.LABEL_XF_KEY: label_to_id(tf.reshape(inputs[features.LABEL_KEY], [-1])),
    }
