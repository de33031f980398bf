"""Small real models for the Grad-CAM tests, built or trained once per session."""
import os

import numpy as np
import pytest

from conftest import SAMPLE_DIR, sample_rows

TRAINED_IMAGE_SIZE = 48
QUADRANT_IMAGE_SIZE = 32


def sample_images(per_class: int, image_size: int):
    """(file names, image bytes, class ids, decoded images) of the first sample images."""
    from explain import gradcam_report
    from models import features
    rows, taken = [], {}
    for row in sample_rows():
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            rows.append(row)
    data = [open(os.path.join(SAMPLE_DIR, row["file"]), "rb").read() for row in rows]
    return ([os.path.basename(row["file"]) for row in rows], data,
            np.array([features.CLASS_NAMES.index(row["label"]) for row in rows]),
            np.stack([gradcam_report.decode(b, image_size) for b in data]))


@pytest.fixture(scope="session")
def trained_baseline():
    """baseline_cnn at 48 px fitted on 30 sample images: weights that carry real training."""
    import tensorflow as tf
    from models import builders
    tf.keras.utils.set_random_seed(0)
    _, _, labels, images = sample_images(per_class=10, image_size=TRAINED_IMAGE_SIZE)
    model = builders.build("baseline_cnn", TRAINED_IMAGE_SIZE)
    # Eager: tracing the augmentation layers into a training graph costs ~45 s, training 15 s.
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
    model.fit(images, labels, epochs=15, batch_size=10, verbose=0)
    return model


def quadrant_model(quadrant: str):
    """A CNN that only sees one quadrant of its input ('top_left' or 'bottom_right').

    The other three quadrants are cut away and zero-padded back before the convolution, so
    the decision provably depends on that quadrant alone. Weights are set by hand: the
    convolution averages brightness and class 0's score grows with it.
    """
    import tensorflow as tf
    half = QUADRANT_IMAGE_SIZE // 2
    cut = {"top_left": ((0, half), (0, half)), "bottom_right": ((half, 0), (half, 0))}[quadrant]
    inputs = tf.keras.Input((QUADRANT_IMAGE_SIZE, QUADRANT_IMAGE_SIZE, 3))
    x = tf.keras.layers.Cropping2D(cut)(inputs)
    x = tf.keras.layers.ZeroPadding2D(cut)(x)
    conv = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")
    x = conv(x)
    dense = tf.keras.layers.Dense(3, activation="softmax", name="probabilities")
    outputs = dense(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, outputs, name=f"quadrant_{quadrant}")
    conv.set_weights([np.full((3, 3, 3, 4), 1.0 / 27, np.float32), np.zeros(4, np.float32)])
    dense.set_weights([np.tile(np.array([[8.0, 0.0, -8.0]], np.float32), (4, 1)),
                       np.zeros(3, np.float32)])
    return model


@pytest.fixture(scope="session")
def mobilenet():
    """MobileNetV2 at 64 px with its ImageNet backbone (as the Trainer builds it), built once."""
    from models import builders
    return builders.build("mobilenet_v2", 64)


def last_relu_name(model) -> str:
    """Keras numbers layer names per process, so tests look the expected name up."""
    import tensorflow as tf
    return [layer.name for layer in model.layers if isinstance(layer, tf.keras.layers.ReLU)][-1]
