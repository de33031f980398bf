"""The model card a pushed version carries (assets_extra.MODEL_CARD_PATH) and its headline numbers.

A person judging a prediction needs to know which model made it and how uncertain its test
figures are, so the page shows the version and each headline metric with its 95% interval.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from models import assets_extra, features

COVID_CLASS = features.CLASS_NAMES[features.COVID_CLASS_ID]
# (label on the page, path of the metric inside the card's test_metrics)
HEADLINE_METRICS = (
    ("Accuracy", ("accuracy",)),
    ("Macro-F1", ("macro_f1",)),
    ("Macro-AUC", ("macro_auc",)),
    (f"{COVID_CLASS} sensitivity", ("per_class", COVID_CLASS, "sensitivity")),
)


class ModelCardError(ValueError):
    """The card exists but cannot be read; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Metric:
    label: str
    value: float
    low: float
    high: float

    def text(self) -> str:
        return f"{self.value:.3f} (95% CI {self.low:.3f}–{self.high:.3f})"


def read_model_card(version_dir: str) -> Optional[Dict[str, Any]]:
    """The card of a pushed version, or None when the version has none."""
    path = os.path.join(version_dir, assets_extra.MODEL_CARD_PATH)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            card = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{path} cannot be read: {error}") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{path} holds no JSON object")
    return card


def headline_metrics(card: Dict[str, Any]) -> List[Metric]:
    """Accuracy, macro-F1, macro-AUC and COVID-19 sensitivity with their intervals."""
    metrics = []
    for label, path in HEADLINE_METRICS:
        entry: Any = card.get("test_metrics")
        for key in path:
            entry = entry.get(key) if isinstance(entry, dict) else None
        try:
            low, high = entry["ci95"]
            metrics.append(Metric(label, float(entry["value"]), float(low), float(high)))
        except (TypeError, KeyError, ValueError):
            raise ModelCardError(
                f"model card: test_metrics.{'.'.join(path)} must be "
                '{"value": number, "ci95": [low, high]}') from None
    return metrics
