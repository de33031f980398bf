"""Reading a pushed version's model card and picking its headline numbers."""
import json
import os

import pytest

from app import model_card
from models import assets_extra, features


def metric(value, low, high):
    return {"value": value, "ci95": [low, high]}


def card_data() -> dict:
    """A card shaped like the Pusher's contract (assets_extra.MODEL_CARD_PATH)."""
    per_class = {name: {"sensitivity": metric(0.5, 0.2, 0.8), "ppv": metric(0.6, 0.3, 0.9),
                        "f1": metric(0.55, 0.25, 0.8), "auc": metric(0.7, 0.5, 0.9)}
                 for name in features.CLASS_NAMES}
    per_class["COVID-19"]["sensitivity"] = metric(0.9, 0.62, 0.98)
    return {"model_name": "cxr_classifier", "model": "mobilenet_v2", "version": "1700000000",
            "created": "2026-11-27T00:00:00+00:00", "blessed": True, "n_test_images": 18,
            "n_test_patients": 17,
            "test_metrics": {"accuracy": metric(0.833, 0.608, 0.942),
                             "macro_f1": metric(0.838, 0.6, 0.95),
                             "macro_auc": metric(0.849, 0.65, 0.97), "per_class": per_class}}


def write_card(version_dir: str, card) -> None:
    path = os.path.join(version_dir, assets_extra.MODEL_CARD_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(card if isinstance(card, str) else json.dumps(card))


def test_headline_metrics_come_with_their_intervals(tmp_path):
    write_card(str(tmp_path), card_data())
    card = model_card.read_model_card(str(tmp_path))
    assert card["version"] == "1700000000"
    metrics = model_card.headline_metrics(card)
    assert [(m.label, m.value, m.low, m.high) for m in metrics] == [
        ("Accuracy", 0.833, 0.608, 0.942), ("Macro-F1", 0.838, 0.6, 0.95),
        ("Macro-AUC", 0.849, 0.65, 0.97), ("COVID-19 sensitivity", 0.9, 0.62, 0.98)]
    assert metrics[0].text() == "0.833 (95% CI 0.608–0.942)"


def test_a_version_without_a_card_has_none(tmp_path):
    assert model_card.read_model_card(str(tmp_path)) is None


def test_unreadable_or_incomplete_cards_say_what_is_wrong(tmp_path):
    write_card(str(tmp_path), "{not json")
    with pytest.raises(model_card.ModelCardError, match="model_card.json cannot be read"):
        model_card.read_model_card(str(tmp_path))
    incomplete = card_data()
    del incomplete["test_metrics"]["per_class"]["COVID-19"]["sensitivity"]["ci95"]
    with pytest.raises(model_card.ModelCardError) as error:
        model_card.headline_metrics(incomplete)
    assert str(error.value) == ('model card: test_metrics.per_class.COVID-19.sensitivity must be '
                                '{"value": number, "ci95": [low, high]}')
