"""Classification metrics with 95% bootstrap confidence intervals over patients.

Images of one patient are not independent (same body, same scanner, often the same day), so
the bootstrap resamples patients with replacement and keeps each patient's images together.
A metric that is undefined in a resample (no positive case, say) is left out of that
resample's distribution; one undefined on the whole set is reported as None.
"""
import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_model_analysis as tfma
from scipy import stats

from models import features

PER_CLASS = ("sensitivity", "ppv", "f1", "auc")
OVERALL = ("accuracy", "macro_f1", "macro_auc")
DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: Optional[float]
    low: Optional[float]
    high: Optional[float]

    def to_json(self) -> Dict:
        return {"value": self.value, "ci95": [self.low, self.high]}

    def complement(self) -> "Estimate":
        """1 - x with the interval flipped (a miss rate from a sensitivity)."""
        flip = (lambda v: None if v is None else 1.0 - v)
        return Estimate(flip(self.value), flip(self.high), flip(self.low))


def one_vs_rest_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half); NaN without both kinds."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[is_positive].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def point_metrics(labels: np.ndarray, probabilities: np.ndarray) -> Dict[str, float]:
    """Flat dict: 'accuracy', 'macro_f1', 'macro_auc' and '<class>/<metric>' (NaN if undefined).

    Macro averages take the classes where the metric is defined.
    """
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    result = {"accuracy": float((predicted == labels).mean()) if len(labels) else float("nan")}
    f1s, aucs = [], []
    for class_id, name in enumerate(features.CLASS_NAMES):
        actual, called = labels == class_id, predicted == class_id
        tp = float((actual & called).sum())
        fp = float((~actual & called).sum())
        fn = float((actual & ~called).sum())
        result[f"{name}/sensitivity"] = _ratio(tp, tp + fn)
        result[f"{name}/ppv"] = _ratio(tp, tp + fp)
        result[f"{name}/f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
        result[f"{name}/auc"] = one_vs_rest_auc(actual, probabilities[:, class_id])
        f1s.append(result[f"{name}/f1"])
        aucs.append(result[f"{name}/auc"])
    result["macro_f1"] = _nanmean(f1s)
    result["macro_auc"] = _nanmean(aucs)
    return result


def _nanmean(values: Iterable[float]) -> float:
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def _none_if_nan(value: float) -> Optional[float]:
    return None if value is None or np.isnan(value) else float(value)


def _patient_resamples(patients: Sequence[str], resamples: int, seed: int):
    """Row indices of each bootstrap resample: patients drawn with replacement, whole."""
    _, patient_index = np.unique(np.asarray(patients), return_inverse=True)
    if not len(patient_index):
        return
    # Rows grouped by patient with one sort: a scan per patient grew with patients x rows.
    order = np.argsort(patient_index, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(patient_index[order])) + 1)
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        chosen = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[p] for p in chosen])


def _estimate(value: float, draws: Sequence[float]) -> Estimate:
    values = np.asarray(draws, dtype=np.float64)
    values = values[~np.isnan(values)]
    if np.isnan(value) or not len(values):
        return Estimate(_none_if_nan(value), None, None)
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Estimate(float(value), float(low), float(high))


def bootstrap(labels: Sequence[int], probabilities: np.ndarray, patients: Sequence[str],
              resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict[str, Estimate]:
    """Point value and percentile 95% interval of every point_metrics entry."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    point = point_metrics(labels, probabilities)
    draws = {name: [] for name in point}
    for rows in _patient_resamples(patients, resamples, seed):
        for name, value in point_metrics(labels[rows], probabilities[rows]).items():
            draws[name].append(value)
    return {name: _estimate(value, draws[name]) for name, value in point.items()}


def paired_difference(labels: Sequence[int], probabilities_a: np.ndarray,
                      probabilities_b: np.ndarray, patients: Sequence[str], metric: str,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Estimate:
    """metric(a) - metric(b), both scored on the same resampled patients in each resample.

    Pairing removes the patient-to-patient noise the two models share, so the interval is
    narrower than comparing two separate intervals.
    """
    labels = np.asarray(labels)

    def difference(rows):
        return (point_metrics(labels[rows], probabilities_a[rows])[metric]
                - point_metrics(labels[rows], probabilities_b[rows])[metric])

    everything = np.arange(len(labels))
    return _estimate(difference(everything),
                     [difference(rows) for rows in _patient_resamples(patients, resamples, seed)])


def confusion_matrix(labels: Sequence[int], probabilities: np.ndarray) -> List[List[int]]:
    """Counts with true classes as rows and predicted classes as columns (CLASS_NAMES order)."""
    matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(probabilities).argmax(axis=1)), 1)
    return matrix.tolist()


def report(labels: Sequence[int], probabilities: np.ndarray, patients: Sequence[str],
           resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict:
    """The model card's metrics block: overall and per-class estimates, counts, confusion."""
    estimates = bootstrap(labels, probabilities, patients, resamples, seed)
    return {
        "n_images": int(len(labels)),
        "n_patients": int(len(set(patients))),
        "class_counts": {name: int(np.sum(np.asarray(labels) == i))
                         for i, name in enumerate(features.CLASS_NAMES)},
        **{name: estimates[name].to_json() for name in OVERALL},
        "per_class": {cls: {metric: estimates[f"{cls}/{metric}"].to_json()
                            for metric in PER_CLASS} for cls in features.CLASS_NAMES},
        "confusion_matrix": confusion_matrix(labels, probabilities),
    }


def sliced_reports(labels: Sequence[int], probabilities: np.ndarray, patients: Sequence[str],
                   slices: Dict[str, Sequence[str]], resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0) -> Dict[str, Dict[str, Dict]]:
    """report() for every value of every slicing feature: {feature: {value: report}}."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    patients = np.asarray(patients)
    result = {}
    for feature, values in slices.items():
        values = np.asarray(values)
        result[feature] = {
            value: report(labels[values == value], probabilities[values == value],
                          list(patients[values == value]), resamples, seed)
            for value in sorted(set(values.tolist()))}
    return result


def load_tfma_metrics(evaluation_uri: str
                       ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, float]]:
    """Per-class and overall metrics of the whole test split (the unsliced slice)."""
    per_class = {name: {} for name in features.CLASS_NAMES}
    overall = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.is_diff or kv.key.model_name == "baseline":
                continue
            value = kv.value.double_value.value
            if kv.key.sub_key.HasField("class_id"):
                per_class[features.CLASS_NAMES[kv.key.sub_key.class_id.value]][kv.key.name] = value
            elif kv.key.HasField("aggregation_type"):
                overall[f"macro_{kv.key.name}"] = value
            else:
                overall[kv.key.name] = value
    return per_class, overall
