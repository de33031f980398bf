"""A split's examples read back, and a model's predictions on them: what the model card,
`cxr compare` and the notebooks measure. Predictions go through the SavedModel's tf.Example
signature, the path TFMA and TF Serving take."""
import csv
import hashlib
import os
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from models import features

METADATA_KEYS = (features.LABEL_KEY,) + tuple(features.METADATA_KEYS)
# Identifies a test example across models (ingestion keeps one copy of identical bytes):
# `cxr compare` pairs predictions by it, never by row order.
IMAGE_DIGEST_KEY = "image_sha256"
PREDICTION_KEYS = (IMAGE_DIGEST_KEY,) + METADATA_KEYS
PREDICT_BATCH = 32
# A metadata feature an example lacks reads as unknown.
METADATA_SPEC = {key: tf.io.FixedLenFeature([], tf.string, default_value=features.UNKNOWN)
                 for key in METADATA_KEYS}


def split_files(examples_uri: str, split: str) -> List[str]:
    """ExampleGen's gzipped TFRecords of one split (TFX names the folders Split-<name>)."""
    return sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))


def parse_metadata(batch: tf.Tensor) -> List[Dict[str, str]]:
    """One parse per batch: parsing record by record in eager mode took seconds (py-spy)."""
    parsed = {k: v.numpy() for k, v in tf.io.parse_example(batch, METADATA_SPEC).items()}
    return [{k: values[i].decode() for k, values in parsed.items()}
            for i in range(int(tf.shape(batch)[0]))]


def count_metadata(examples_uri: str, split: str, keys: Sequence[str]) -> Counter:
    """Examples per combination of `keys` values in a split, counted a batch at a time (no
    rows kept)."""
    records = tf.data.TFRecordDataset(split_files(examples_uri, split), compression_type="GZIP")
    spec = {key: METADATA_SPEC[key] for key in keys}
    counts = Counter()
    for batch in records.batch(256):
        parsed = tf.io.parse_example(batch, spec)
        counts.update(zip(*([value.decode() for value in parsed[key].numpy()] for key in keys)))
    return counts


def read_metadata(examples_uri: str, split: str) -> List[Dict[str, str]]:
    """Every example's metadata of a split (for notebooks; the card counts in a stream)."""
    records = tf.data.TFRecordDataset(split_files(examples_uri, split), compression_type="GZIP")
    return [row for batch in records.batch(PREDICT_BATCH) for row in parse_metadata(batch)]


def predict_split(model_dir: str, examples_uri: str, split: str
                  ) -> Tuple[List[Dict[str, str]], np.ndarray]:
    """Metadata and class probabilities of every example of `split`, through the
    SavedModel's tf.Example signature: the same path TFMA and TF Serving take."""
    predict = tf.saved_model.load(model_dir).signatures[features.TF_EXAMPLE_SIGNATURE]
    records = tf.data.TFRecordDataset(split_files(examples_uri, split), compression_type="GZIP")
    image_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    rows, probabilities = [], []
    for batch in records.batch(PREDICT_BATCH):
        probabilities.append(predict(examples=batch)[features.PROBABILITIES_OUTPUT].numpy())
        images = tf.io.parse_example(batch, image_spec)[features.IMAGE_KEY].numpy()
        rows += [dict(row, **{IMAGE_DIGEST_KEY: hashlib.sha256(image).hexdigest()})
                 for row, image in zip(parse_metadata(batch), images)]
    if not rows:
        raise ValueError(f"split {split!r} of {examples_uri} holds no examples")
    return rows, np.concatenate(probabilities)


def write_predictions(rows: List[Dict[str, str]], probabilities: np.ndarray, path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(list(PREDICTION_KEYS) + [f"p_{name}" for name in features.CLASS_NAMES])
        for row, p in zip(rows, probabilities):
            writer.writerow([row[k] for k in PREDICTION_KEYS] + [f"{v:.6f}" for v in p])


def read_predictions(path: str) -> Tuple[List[Dict[str, str]], np.ndarray]:
    """The rows and probabilities write_predictions saved (for `cxr compare`, notebooks).

    A column the file lacks (sex, or the image digest, in cards written by older versions)
    reads as unknown.
    """
    with tf.io.gfile.GFile(path) as f:
        table = list(csv.DictReader(f))
    probabilities = np.array([[float(r[f"p_{name}"]) for name in features.CLASS_NAMES]
                              for r in table]).reshape(-1, features.NUM_CLASSES)
    return [{k: r.get(k, features.UNKNOWN) for k in PREDICTION_KEYS} for r in table], probabilities


def label_ids(rows: List[Dict[str, str]]) -> np.ndarray:
    return np.array([features.CLASS_NAMES.index(r[features.LABEL_KEY]) for r in rows])
