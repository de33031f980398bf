from collections import Counter

from evaluation import bias
from models import features


def _rows(label, source, age, count):
    return [(label, source, age)] * count


def test_cxr3_like_data_warns_of_its_shortcuts():
    rows = (_rows("COVID-19", "cohen", "adult", 40) + _rows("Pneumonia", "cohen", "adult", 5)
            + _rows("Pneumonia", "kermany", "pediatric", 40)
            + _rows("Normal", "kermany", "pediatric", 40))
    report = bias.data_bias(Counter(rows))
    assert report["class_by_source"]["kermany"] == {"COVID-19": 0, "Pneumonia": 40, "Normal": 40}
    assert report["class_by_age_group"]["adult"] == {"COVID-19": 40, "Pneumonia": 5, "Normal": 0}
    assert report["warnings"] == [
        "COVID-19: no pediatric image.",
        "Normal: no adult image.",
        "COVID-19: 40 of 40 images come from cohen.",
        "Pneumonia: 40 of 45 images come from kermany.",
        "Normal: 40 of 40 images come from kermany.",
    ]


def test_a_nearly_absent_class_in_an_age_group_is_reported():
    rows = (_rows("COVID-19", "a", "adult", 100) + _rows("Normal", "a", "adult", 1)
            + _rows("Normal", "b", "pediatric", 60) + _rows("Pneumonia", "b", "adult", 50)
            + _rows("Pneumonia", "c", "pediatric", 50) + _rows("COVID-19", "c", "pediatric", 9))
    assert ("adult images are almost never Normal (1 of 151): a model can learn that adult "
            "films are not Normal.") in bias.data_bias(Counter(rows))["warnings"]


def test_a_single_class_source_is_named():
    rows = (_rows("COVID-19", "hannover", "unknown", 12) + _rows("COVID-19", "cohen", "adult", 30)
            + _rows("Pneumonia", "nih", "adult", 30) + _rows("Normal", "nih", "adult", 30)
            + _rows("Pneumonia", "cohen", "adult", 3) + _rows("Normal", "kermany", "pediatric", 3)
            + _rows("Pneumonia", "kermany", "pediatric", 3))
    warnings = bias.data_bias(Counter(rows))["warnings"]
    assert ("source hannover holds only COVID-19 (12 images): for its films, the source alone "
            "gives the answer.") in warnings
    assert "COVID-19: no pediatric image." in warnings
    assert not any(w.startswith("Normal: no adult") for w in warnings)


def test_balanced_data_has_no_warning():
    rows = [row for source in ("a", "b") for age in ("adult", "pediatric")
            for name in features.CLASS_NAMES for row in _rows(name, source, age, 5)]
    assert bias.data_bias(Counter(rows))["warnings"] == []
