"""Classification metrics with 95% confidence intervals that respect patients.

Images of one patient are not independent (same body, same scanner, often the same day).
Proportions (accuracy, sensitivity, PPV) get a Wilson score interval on an effective sample
size: the number of images divided by the design effect that the patients' clustering causes
(at 0 or 1 the clustering cannot be estimated, so each patient counts once). Unlike a
bootstrap, it does not collapse to 0-0 when no COVID-19 case was missed. F1 and ROC-AUC get a
percentile bootstrap that resamples patients with replacement and keeps each patient's images
together; a metric that is undefined in a resample (no positive case, say) is left out of that
resample's distribution, and one undefined on the whole set is reported as None.
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
# The features the model card and `cxr compare` slice the metrics by; source and age group
# first: where a shortcut shows.
SLICE_KEYS = (features.SOURCE_KEY, features.AGE_GROUP_KEY, features.VIEW_KEY)
CALIBRATION_BINS = 10


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

    Macro averages take the classes the labels hold (where the metric is defined): on a slice
    of two classes, such as one source's Normal and Pneumonia films, macro-F1 is their mean,
    not dragged to 2/3 of it by an F1 of 0 for a third class the slice cannot contain. Calls of
    that absent class still lower the present classes' sensitivity.
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
        if actual.any():
            f1s.append(result[f"{name}/f1"])
        aucs.append(result[f"{name}/auc"])
    result["macro_f1"] = _nanmean(f1s)
    result["macro_auc"] = _nanmean(aucs)
    return result


def wilson_interval(successes: float, trials: float, confidence: float = CONFIDENCE
                    ) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion; trials may be an effective size."""
    if trials <= 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_wilson_interval(successes: Sequence[bool], patients: Sequence[str],
                              confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Wilson interval of mean(successes) with one row per image, clustered by patient.

    The design effect is the cluster-robust (sandwich) variance of the proportion over its
    binomial variance, never below 1: exactly 1 for one image per patient, and the images per
    patient when each patient's images agree. The interval is Wilson's at n / design effect.
    """
    successes = np.asarray(successes, dtype=np.float64)
    n = len(successes)
    if not n:
        return float("nan"), float("nan")
    _, cluster = np.unique(np.asarray(patients), return_inverse=True)
    clusters = int(cluster.max()) + 1
    p = successes.mean()
    if p in (0.0, 1.0) or clusters < 2:
        effective = float(clusters)
    else:
        residuals = np.bincount(cluster, weights=successes - p, minlength=clusters)
        robust = np.sum(residuals ** 2) / n ** 2
        effective = n / max(1.0, robust / (p * (1 - p) / n))
    return wilson_interval(p * effective, effective, confidence)


def _proportion_rows(labels: np.ndarray, predicted: np.ndarray
                     ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """For each proportion metric: (rows in its denominator, success per such row)."""
    rows = {"accuracy": (np.ones(len(labels), bool), predicted == labels)}
    for class_id, name in enumerate(features.CLASS_NAMES):
        actual, called = labels == class_id, predicted == class_id
        rows[f"{name}/sensitivity"] = (actual, called[actual])
        rows[f"{name}/ppv"] = (called, actual[called])
    return rows


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
    """Point value and percentile 95% patient-bootstrap interval of every point_metrics
    entry."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    point = point_metrics(labels, probabilities)
    draws = {name: [] for name in point}
    for rows in _patient_resamples(patients, resamples, seed):
        for name, value in point_metrics(labels[rows], probabilities[rows]).items():
            draws[name].append(value)
    return {name: _estimate(value, draws[name]) for name, value in point.items()}


def estimates(labels: Sequence[int], probabilities: np.ndarray, patients: Sequence[str],
              resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict[str, Estimate]:
    """Every point_metrics entry with its interval: clustered Wilson for proportions,
    the patient bootstrap for the rest."""
    labels = np.asarray(labels)
    result = bootstrap(labels, probabilities, patients, resamples, seed)
    patients = np.asarray(patients)
    predicted = np.asarray(probabilities).argmax(axis=1)
    for name, (rows, successes) in _proportion_rows(labels, predicted).items():
        if result[name].value is not None:
            low, high = clustered_wilson_interval(successes, patients[rows])
            result[name] = Estimate(result[name].value, low, high)
    return result


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


def calibration(labels: Sequence[int], probabilities: np.ndarray, bins: int = CALIBRATION_BINS
                ) -> Dict:
    """Expected calibration error and the reliability diagram's bins (top-class confidence).

    Images are grouped by the probability of their predicted class into equal-width bins;
    ECE is the image-weighted mean gap between each bin's accuracy and its mean confidence.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, gap = [], 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        entry = {"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                 "confidence": float(confidence[members].mean()) if count else None,
                 "accuracy": float(correct[members].mean()) if count else None}
        if count:
            gap += count * abs(entry["accuracy"] - entry["confidence"])
        table.append(entry)
    return {"ece": gap / len(labels) if len(labels) else None, "bins": table}


def confusion_matrix(labels: Sequence[int], probabilities: np.ndarray) -> List[List[int]]:
    """Counts with true classes as rows and predicted classes as columns (CLASS_NAMES order)."""
    matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(probabilities).argmax(axis=1)), 1)
    return matrix.tolist()


def report(labels: Sequence[int], probabilities: np.ndarray, patients: Sequence[str],
           resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict:
    """The model card's metrics block: overall and per-class estimates, counts, confusion."""
    estimated = estimates(labels, probabilities, patients, resamples, seed)
    return {
        "n_images": int(len(labels)),
        "n_patients": int(len(set(patients))),
        "class_counts": {name: int(np.sum(np.asarray(labels) == i))
                         for i, name in enumerate(features.CLASS_NAMES)},
        **{name: estimated[name].to_json() for name in OVERALL},
        "per_class": {cls: {metric: estimated[f"{cls}/{metric}"].to_json()
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
