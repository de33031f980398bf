import math

import numpy as np
import pytest

from models import balance, features, trainer

COUNTS = {("COVID-19", "cohen"): 100, ("COVID-19", "hannover"): 25,
          ("Pneumonia", "cohen"): 16, ("Pneumonia", "nih"): 64, ("Normal", "nih"): 45}


def _class_total(weights, label):
    return sum(weights[key] * n for key, n in COUNTS.items() if key[0] == label)


@pytest.mark.parametrize("mode", balance.MODES)
def test_every_class_carries_the_same_total_weight(mode):
    weights = balance.group_weights(COUNTS, mode)
    expected = sum(COUNTS.values()) / features.NUM_CLASSES
    for label in features.CLASS_NAMES:
        assert _class_total(weights, label) == pytest.approx(expected)


def test_class_mode_gives_the_trainers_class_weights_to_every_source():
    weights = balance.group_weights(COUNTS, balance.CLASS)
    per_class = trainer.class_weights(np.array([125, 80, 45]))
    for (label, _), weight in weights.items():
        assert weight == pytest.approx(per_class[features.CLASS_NAMES.index(label)])


def test_class_source_mode_gives_each_source_a_total_by_the_square_root_of_its_count():
    weights = balance.group_weights(COUNTS, balance.CLASS_SOURCE)
    cohen = weights[("COVID-19", "cohen")] * 100
    hannover = weights[("COVID-19", "hannover")] * 25
    assert cohen / hannover == pytest.approx(math.sqrt(100) / math.sqrt(25))
    # A Cohen pneumonia film weighs twice a NIH one: its source holds a quarter as many.
    assert weights[("Pneumonia", "cohen")] == pytest.approx(2 * weights[("Pneumonia", "nih")])
    # A class with one source is weighted as in class mode.
    assert weights[("Normal", "nih")] == pytest.approx(
        balance.group_weights(COUNTS, balance.CLASS)[("Normal", "nih")])


def test_empty_groups_get_no_weight_and_unknown_modes_are_named():
    assert ("Normal", "x") not in balance.group_weights({**COUNTS, ("Normal", "x"): 0},
                                                        balance.CLASS_SOURCE)
    with pytest.raises(ValueError, match="unknown balance 'source'; choose one of class, "
                                         "class_source"):
        balance.group_weights(COUNTS, "source")
