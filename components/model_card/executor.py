"""ModelCardGenerator executor: predicts the test split, measures it with patient-level
confidence intervals and slices, and writes model_card.{json,md,html} with its figures."""
import datetime
import importlib.metadata
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import code_digest
from evaluation import bias, metrics, predictions, render
from evaluation import thresholds
from evaluation.thresholds import THRESHOLD_KEYS
from models import architectures, assets_extra, calibration, features
from serving import layout

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
def _first_key_counts(counts: Counter) -> Counter:
    result = Counter()
    for key, count in counts.items():
        result[key[0]] += count
    return result


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


def calibration_block(rows: List[Dict[str, str]], probabilities: np.ndarray,
                      training_summary: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Test-split ECE and reliability bins of the shipped (temperature-scaled) model and of
    the same model before scaling, recovered by undoing the recorded temperature."""
    if not training_summary or "temperature" not in training_summary:
        return None
    temperature = training_summary["temperature"]
    labels = predictions.label_ids(rows)
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
    labels, patients = predictions.label_ids(rows), [r[features.PATIENT_ID_KEY] for r in rows]
    return (metrics.report(labels, probabilities, patients, resamples),
            metrics.sliced_reports(labels, probabilities, patients,
                                   {key: [r[key] for r in rows] for key in metrics.SLICE_KEYS},
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

        model_dir = layout.find_saved_model(model_uri)
        rows, probabilities = predictions.predict_split(model_dir, examples_uri, "test")
        test_metrics, slices = build_card(rows, probabilities, resamples)

        blessing = input_dict.get(BLESSING_KEY) or []
        evaluation = input_dict.get(EVALUATION_KEY) or []
        training_summary = assets_extra.read_training_summary(model_dir)
        source, hyperparameters = _hyperparameters(input_dict.get(HYPERPARAMETERS_KEY) or [],
                                                   training, training_summary)
        train = predictions.count_metadata(examples_uri, "train", bias.KEYS)
        splits = {"train": _first_key_counts(train),
                  "eval": _first_key_counts(predictions.count_metadata(
                      examples_uri, "eval", [features.LABEL_KEY])),
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
                "parameters": _parameter_count(model_dir, training_summary),
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
    render.plot_roc_curves(predictions.label_ids(rows), probabilities, aucs, title,
                           os.path.join(out_dir, render.ROC_FILE))
    if card.get("calibration"):
        render.plot_reliability(card["calibration"], title,
                                os.path.join(out_dir, render.RELIABILITY_FILE))
    predictions.write_predictions(rows, probabilities,
                                  os.path.join(out_dir, render.PREDICTIONS_FILE))
    with tf.io.gfile.GFile(os.path.join(out_dir, render.JSON_FILE), "w") as f:
        json.dump(card, f, indent=2)
    render.write_documents(card, out_dir)


def _parameter_count(model_dir: str, training_summary: Optional[Dict[str, Any]]) -> int:
    """From the Trainer's summary; loading the Keras model to count them took seconds, and
    only models trained before the count was recorded need it."""
    if (training_summary or {}).get("parameters") is not None:
        return int(training_summary["parameters"])
    return int(layout.load_keras_model(model_dir).count_params())


def _weights_description(training: Dict[str, Any]) -> str:
    if training["model"] == architectures.BASELINE_CNN or training.get("weights") == "none":
        return "random initialisation (trained from scratch)"
    return training.get("weights") or "the bundled ImageNet weights (models/weights)"


def _tfma_cross_check(evaluation_uri: str) -> Dict[str, float]:
    _, overall = metrics.load_tfma_metrics(evaluation_uri)
    return {"accuracy": overall.get("sparse_categorical_accuracy"),
            "macro_auc": overall.get("macro_auc"),
            "examples": int(overall.get("example_count", 0))}
