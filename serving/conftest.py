"""Fixtures for the serving tests: the tiny pipeline's pushed model and a briefly trained one.

The tiny pipeline trains for one step, so its outputs are near-uniform and a top-class
comparison on them says little. `trained_model` and `trained_cnn` train on 80 sample images
for a few epochs (confident predictions), export with the Trainer's own export_signatures and
the pipeline's Transform graph, and write the sample as ExampleGen-style gzipped TFRecords
(Split-train / Split-test: the other 40) for the export checks.
"""
import glob
import os
from typing import NamedTuple

import numpy as np
import pytest

from conftest import SAMPLE_DIR, sample_rows

TEST_EVERY = 3  # every third sample image goes to the test split: 40 of 120
TRAINED_MODEL_NAME = "cxr_trained"


class TrainedModel(NamedTuple):
    version_dir: str
    examples_dir: str
    test_images: int


def _write_split(examples_dir: str, split: str, rows) -> None:
    import tensorflow as tf

    from models import features

    os.makedirs(os.path.join(examples_dir, f"Split-{split}"))
    path = os.path.join(examples_dir, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for row in rows:
            with open(os.path.join(SAMPLE_DIR, row["file"]), "rb") as f:
                image = f.read()
            example = tf.train.Example(features=tf.train.Features(feature={
                features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                features.LABEL_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[row["label"].encode()])),
            }))
            writer.write(example.SerializeToString())


@pytest.fixture(scope="session")
def pushed_model_base(tiny_pipeline) -> str:
    """<serving_dir>/cxr_mobilenet_v2: the folder of numbered versions the Pusher wrote."""
    return os.path.dirname(tiny_pipeline.first.pushed_model_dir)


def _train_and_export(tiny_pipeline, root, model, learning_rate: float, epochs: int,
                      batch_size: int) -> TrainedModel:
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import features, preprocessing, trainer

    rows = sample_rows()
    train_rows = [row for i, row in enumerate(rows) if i % TEST_EVERY]
    test_rows = [row for i, row in enumerate(rows) if not i % TEST_EVERY]
    examples_dir = str(root / "examples")
    _write_split(examples_dir, "train", train_rows)
    _write_split(examples_dir, "test", test_rows)

    image_size = tiny_pipeline.config.image_size
    images = np.stack([preprocessing.decode_image(
        tf.io.read_file(os.path.join(SAMPLE_DIR, row["file"])), image_size).numpy()
        for row in train_rows])
    labels = np.array([features.CLASS_NAMES.index(row["label"]) for row in train_rows])
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=epochs, batch_size=batch_size, verbose=0)

    transform_dirs = glob.glob(os.path.join(tiny_pipeline.config.pipeline_root, "Transform",
                                            "transform_graph", "*"))
    tf_transform_output = tft.TFTransformOutput(max(transform_dirs, key=os.path.getmtime))
    version_dir = str(root / "serving" / TRAINED_MODEL_NAME / "1")
    model.save(version_dir, save_format="tf", save_traces=False,
               signatures=trainer.export_signatures(model, tf_transform_output))
    return TrainedModel(version_dir, examples_dir, len(test_rows))


@pytest.fixture(scope="session")
def trained_model(tiny_pipeline, tmp_path_factory) -> TrainedModel:
    """MobileNetV2 (the pipeline's default), head trained for 15 epochs at a high learning
    rate: confident predictions, so that a top-class disagreement means a real export error."""
    import tensorflow as tf

    from models import builders
    tf.keras.utils.set_random_seed(0)
    model = builders.build_mobilenet_v2(tiny_pipeline.config.image_size)
    return _train_and_export(tiny_pipeline, tmp_path_factory.mktemp("trained_mobilenet"),
                             model, learning_rate=1e-2, epochs=15, batch_size=16)


@pytest.fixture(scope="session")
def trained_cnn(tiny_pipeline, tmp_path_factory) -> TrainedModel:
    """The baseline CNN trained for 30 epochs (from scratch on 80 images at 64 px it needs
    them to call all three classes): the float16 and int8 exports on plain convolutions."""
    import tensorflow as tf

    from models import builders
    tf.keras.utils.set_random_seed(0)
    model = builders.build_baseline_cnn(tiny_pipeline.config.image_size)
    return _train_and_export(tiny_pipeline, tmp_path_factory.mktemp("trained_cnn"),
                             model, learning_rate=1e-3, epochs=30, batch_size=8)
