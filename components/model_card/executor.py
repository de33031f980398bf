"""ModelCardGenerator executor: predicts the test split, measures it with patient-level
confidence intervals and slices, and writes model_card.{json,md,html} with its figures."""
import csv
import datetime
import hashlib
import importlib.metadata
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import code_digest
from explain.gradcam_report import find_saved_model
from evaluation import bias, metrics, render
from evaluation import thresholds
from evaluation.thresholds import THRESHOLD_KEYS
from models import calibration, features

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "model_blessing"
HYPERPARAMETERS_KEY = "hyperparameters"
MODEL_CARD_KEY = "model_card"
MODEL_NAME_KEY = "model_name"
TRAINING_KEY = "training"
BLESSING_RULE_KEY = "blessing_rule"
RESAMPLES_KEY = "bootstrap_resamples"
DATA_DIR_KEY = "data_dir"
EPOCHS_KEY = "epochs"
SLICE_KEYS = (features.SOURCE_KEY, features.AGE_GROUP_KEY, features.VIEW_KEY)
METADATA_KEYS = (features.LABEL_KEY,) + tuple(features.METADATA_KEYS)
# Identifies a test example across models (ingestion keeps one copy of identical bytes):
# `cxr compare` pairs predictions by it, never by row order.
IMAGE_DIGEST_KEY = "image_sha256"
PREDICTION_KEYS = (IMAGE_DIGEST_KEY,) + METADATA_KEYS
PREDICT_BATCH = 32
# Images are read only for the test split; the others are counted from their metadata.
_METADATA_SPEC = {key: tf.io.FixedLenFeature([], tf.string, default_value=features.UNKNOWN)
                  for key in METADATA_KEYS}


def _split_files(examples_uri: str, split: str) -> List[str]:
    """ExampleGen's gzipped TFRecords of one split (TFX names the folders Split-<name>)."""
    return sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))


def _parse_metadata(batch: tf.Tensor) -> List[Dict[str, str]]:
    """One parse per batch: parsing record by record in eager mode took seconds (py-spy)."""
    parsed = {k: v.numpy() for k, v in tf.io.parse_example(batch, _METADATA_SPEC).items()}
    return [{k: values[i].decode() for k, values in parsed.items()}
            for i in range(int(tf.shape(batch)[0]))]


def count_metadata(examples_uri: str, split: str, keys: Sequence[str]) -> Counter:
    """Examples per combination of `keys` values in a split, counted a batch at a time (no
    rows kept)."""
    records = tf.data.TFRecordDataset(_split_files(examples_uri, split), compression_type="GZIP")
    spec = {key: _METADATA_SPEC[key] for key in keys}
    counts = Counter()
    for batch in records.batch(256):
        parsed = tf.io.parse_example(batch, spec)
        counts.update(zip(*([value.decode() for value in parsed[key].numpy()] for key in keys)))
    return counts


def _first_key_counts(counts: Counter) -> Counter:
    result = Counter()
    for key, count in counts.items():
        result[key[0]] += count
    return result


def read_metadata(examples_uri: str, split: str) -> List[Dict[str, str]]:
    """Every example's metadata of a split (for notebooks; the card counts in a stream)."""
    records = tf.data.TFRecordDataset(_split_files(examples_uri, split), compression_type="GZIP")
    rows = []
    for batch in records.batch(PREDICT_BATCH):
        parsed = {k: v.numpy() for k, v in tf.io.parse_example(batch, _METADATA_SPEC).items()}
        rows += [{k: values[i].decode() for k, values in parsed.items()}
                 for i in range(len(parsed[features.LABEL_KEY]))]
    return rows


def predict_split(model_dir: str, examples_uri: str, split: str
                  ) -> Tuple[List[Dict[str, str]], np.ndarray]:
    """Metadata and class probabilities of every example of `split`, through the
    SavedModel's tf.Example signature: the same path TFMA and TF Serving take."""
    predict = tf.saved_model.load(model_dir).signatures[features.TF_EXAMPLE_SIGNATURE]
    records = tf.data.TFRecordDataset(_split_files(examples_uri, split), compression_type="GZIP")
    image_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    rows, probabilities = [], []
    for batch in records.batch(PREDICT_BATCH):
        probabilities.append(predict(examples=batch)[features.PROBABILITIES_OUTPUT].numpy())
        images = tf.io.parse_example(batch, image_spec)[features.IMAGE_KEY].numpy()
        rows += [dict(row, **{IMAGE_DIGEST_KEY: hashlib.sha256(image).hexdigest()})
                 for row, image in zip(_parse_metadata(batch), images)]
    if not rows:
        raise ValueError(f"split {split!r} of {examples_uri} holds no examples")
    return rows, np.concatenate(probabilities)


def _counts(rows: List[Dict[str, str]], key: str) -> str:
    return _format_counts(Counter(r[key] for r in rows))


def _format_counts(counts: Counter) -> str:
    return ", ".join(f"{value} {count}" for value, count in sorted(counts.items()))


def _versions() -> Dict[str, str]:
    names = {"cxr-tfx": "cxr-tfx", "TensorFlow": "tensorflow", "TFX": "tfx",
             "TFMA": "tensorflow-model-analysis"}
    return {label: importlib.metadata.version(package) for label, package in names.items()}


def _hyperparameters(artifact_list: List[types.Artifact], training: Dict[str, Any],
                     training_summary: Optional[Dict[str, Any]]) -> Tuple[str, Dict[str, Any]]:
    """Where the training settings came from, and their values as the Trainer used them."""
    tuned_keys = ("head_learning_rate", "fine_tune_learning_rate", "fine_tune_layers", "dropout",
                  "label_smoothing")
    used = (training_summary or {}).get("config") or training
    if artifact_list:
        path = os.path.join(artifact_list[0].uri, "best_hyperparameters.txt")
        with tf.io.gfile.GFile(path) as f:
            values = json.load(f)["values"]
        return "chosen by the Tuner on the eval split", {**values, **{
            k: used[k] for k in tuned_keys if k in used and k not in values}}
    return "defaults (no tuning)", {k: used[k] for k in tuned_keys if k in used}


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


def read_training_summary(model_dir: str) -> Optional[Dict[str, Any]]:
    """training.json that the Trainer writes into the SavedModel (None for older models)."""
    path = os.path.join(model_dir, features.SERVING_EXTRAS_DIR, features.TRAINING_SUMMARY_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def calibration_block(rows: List[Dict[str, str]], probabilities: np.ndarray,
                      training_summary: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Test-split ECE and reliability bins of the shipped (temperature-scaled) model and of
    the same model before scaling, recovered by undoing the recorded temperature."""
    if not training_summary or "temperature" not in training_summary:
        return None
    temperature = training_summary["temperature"]
    labels = label_ids(rows)
    before = calibration.apply_temperature(probabilities, 1.0 / temperature)
    return {"temperature": temperature,
            "fitted_on": f"eval split ({training_summary['eval_images']} images)",
            "at_range_limit": not (calibration.TEMPERATURE_RANGE[0] * 1.01 < temperature
                                   < calibration.TEMPERATURE_RANGE[1] * 0.99),
            "test_before": metrics.calibration(labels, before),
            "test_after": metrics.calibration(labels, probabilities)}


def build_card(rows: List[Dict[str, str]], probabilities: np.ndarray, resamples: int
               ) -> Tuple[Dict, Dict]:
    """(overall test metrics, {slice feature: {value: metrics}})."""
    labels, patients = label_ids(rows), [r[features.PATIENT_ID_KEY] for r in rows]
    return (metrics.report(labels, probabilities, patients, resamples),
            metrics.sliced_reports(labels, probabilities, patients,
                                   {key: [r[key] for r in rows] for key in SLICE_KEYS},
                                   resamples))


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        code_digest.check_component(exec_properties.get(code_digest.CODE_SHA256_KEY), "model_card")
        model_uri = artifact_utils.get_single_uri(input_dict[MODEL_KEY])
        examples_uri = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        out_dir = artifact_utils.get_single_uri(output_dict[MODEL_CARD_KEY])
        training = json.loads(exec_properties[TRAINING_KEY])
        training.update({key: exec_properties[key] for key in (DATA_DIR_KEY, EPOCHS_KEY)
                         if exec_properties.get(key) is not None})
        blessing_rule = exec_properties[BLESSING_RULE_KEY]
        if all(exec_properties.get(key) is not None for key in THRESHOLD_KEYS):
            blessing_rule = thresholds.blessing_rule(
                *(exec_properties[key] for key in THRESHOLD_KEYS))
        resamples = exec_properties[RESAMPLES_KEY]

        model_dir = find_saved_model(model_uri)
        rows, probabilities = predict_split(model_dir, examples_uri, "test")
        test_metrics, slices = build_card(rows, probabilities, resamples)

        blessing = input_dict.get(BLESSING_KEY) or []
        evaluation = input_dict.get(EVALUATION_KEY) or []
        training_summary = read_training_summary(model_dir)
        source, hyperparameters = _hyperparameters(input_dict.get(HYPERPARAMETERS_KEY) or [],
                                                   training, training_summary)
        keras_model = tf.keras.models.load_model(model_dir, compile=False)
        train = count_metadata(examples_uri, "train", bias.KEYS)
        splits = {"train": _first_key_counts(train),
                  "eval": _first_key_counts(count_metadata(examples_uri, "eval",
                                                           [features.LABEL_KEY])),
                  "test": Counter(r[features.LABEL_KEY] for r in rows)}
        card = {
            "model_name": exec_properties[MODEL_NAME_KEY],
            "version": None,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "disclaimer": render.DISCLAIMER.replace("**", ""),
            "blessed": (bool(blessing[0].get_int_custom_property("blessed"))
                        if blessing else None),
            "blessing_rule": blessing_rule,
            "model": {
                "architecture": training["model"],
                "parameters": int(keras_model.count_params()),
                "image_size": int(training["image_size"]),
                "epochs": int(training["epochs"]),
                "weights": _weights_description(training),
                "hyperparameters_source": source,
                "hyperparameters": hyperparameters,
                "best_epoch": (training_summary or {}).get("best_epoch"),
                "epochs_run": (training_summary or {}).get("epochs_run"),
            },
            "training_data": {
                "data_dir": training.get("data_dir", "unknown"),
                "split_counts": "; ".join(
                    f"{split}: {sum(c.values())} images ({_format_counts(c)})"
                    for split, c in splits.items()),
                "test_sources": _counts(rows, features.SOURCE_KEY),
                "test_age_groups": _counts(rows, features.AGE_GROUP_KEY),
                "train_bias": bias.data_bias(train),
            },
            "bootstrap_resamples": resamples,
            "n_test_images": test_metrics["n_images"],
            "n_test_patients": test_metrics["n_patients"],
            "test_metrics": test_metrics,
            "slices": slices,
            "calibration": calibration_block(rows, probabilities, training_summary),
            "tfma_cross_check": _tfma_cross_check(evaluation[0].uri) if evaluation else None,
            "versions": _versions(),
        }
        write_card(card, rows, probabilities, out_dir)


def write_card(card: Dict, rows: List[Dict[str, str]], probabilities: np.ndarray,
               out_dir: str) -> None:
    tf.io.gfile.makedirs(out_dir)
    title = f"{card['model_name']} ({card['model']['architecture']})"
    render.plot_confusion_matrix(card["test_metrics"]["confusion_matrix"], title,
                                 os.path.join(out_dir, render.CONFUSION_FILE))
    aucs = {name: values["auc"] for name, values in card["test_metrics"]["per_class"].items()}
    render.plot_roc_curves(label_ids(rows), probabilities, aucs, title,
                           os.path.join(out_dir, render.ROC_FILE))
    if card.get("calibration"):
        render.plot_reliability(card["calibration"], title,
                                os.path.join(out_dir, render.RELIABILITY_FILE))
    write_predictions(rows, probabilities, os.path.join(out_dir, render.PREDICTIONS_FILE))
    with tf.io.gfile.GFile(os.path.join(out_dir, render.JSON_FILE), "w") as f:
        json.dump(card, f, indent=2)
    render.write_documents(card, out_dir)


def _weights_description(training: Dict[str, Any]) -> str:
    if training["model"] == "baseline_cnn" or training.get("weights") == "none":
        return "random initialisation (trained from scratch)"
    return training.get("weights") or "the bundled ImageNet weights (models/weights)"


def _tfma_cross_check(evaluation_uri: str) -> Dict[str, float]:
    _, overall = metrics.load_tfma_metrics(evaluation_uri)
    return {"accuracy": overall.get("sparse_categorical_accuracy"),
            "macro_auc": overall.get("macro_auc"),
            "examples": int(overall.get("example_count", 0))}
