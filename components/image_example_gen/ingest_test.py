import os
import random

import pytest
from PIL import Image

from components.image_example_gen import ingest
from conftest import SAMPLE_DIR
from models import features


def _image(path, mode="L", size=(40, 30), fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, 128).save(path, fmt)


def test_folder_layout_maps_aliases_case_insensitively(tmp_path):
    for folder in ("COVID19", "covid-19", "PNEUMONIA", "viral", "Bacterial", "NORMAL",
                   "No Finding"):
        _image(str(tmp_path / folder / "a.png"))
    _image(str(tmp_path / "Normal" / "nested" / "person12_virus_34.jpeg"))
    (tmp_path / "Normal" / "notes.txt").write_text("not an image")

    records = ingest.scan(str(tmp_path))

    labels = {os.path.relpath(r.path, tmp_path): r.label for r in records}
    assert labels == {
        "COVID19/a.png": "COVID-19", "covid-19/a.png": "COVID-19",
        "PNEUMONIA/a.png": "Pneumonia", "viral/a.png": "Pneumonia",
        "Bacterial/a.png": "Pneumonia", "NORMAL/a.png": "Normal",
        "No Finding/a.png": "Normal", "Normal/nested/person12_virus_34.jpeg": "Normal",
    }
    nested = next(r for r in records if r.path.endswith("person12_virus_34.jpeg"))
    assert nested.patient_id == "person12"
    assert (nested.source, nested.view, nested.age_group) == ("unknown",) * 3


def test_unknown_folder_keeps_its_name_for_the_validator(tmp_path):
    _image(str(tmp_path / "Lung_Opacity" / "x.png"))
    assert [r.label for r in ingest.scan(str(tmp_path))] == ["Lung_Opacity"]


def test_manifest_with_extra_and_missing_optional_columns(tmp_path):
    _image(str(tmp_path / "img" / "IM-0456-0001.jpeg"), fmt="JPEG")
    _image(str(tmp_path / "img" / "b.png"))
    (tmp_path / "manifest.csv").write_text(
        "file,label,site,patient_id,view\n"
        "img/IM-0456-0001.jpeg,covid,A,,PA\n"
        "img/b.png,Normal,B,p7,\n")

    records = ingest.scan(str(tmp_path))

    assert [(r.label, r.patient_id, r.source, r.view, r.age_group) for r in records] == [
        ("COVID-19", "IM-0456", "unknown", "PA", "unknown"),
        ("Normal", "p7", "unknown", "unknown", "unknown"),
    ]


def test_manifest_missing_required_column_is_named(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,patient_id\na.png,p1\n")
    with pytest.raises(ingest.DataError, match="lacks required column.*label"):
        ingest.scan(str(tmp_path))


def test_missing_and_empty_data_dirs_are_clear_errors(tmp_path):
    with pytest.raises(ingest.DataError, match="data directory not found"):
        ingest.scan(str(tmp_path / "nope"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ingest.DataError, match="no images found"):
        ingest.scan(str(tmp_path))


def _keys(records):
    return [(r.patient_id, r.label, r.source) for r in records]


def test_split_has_no_patient_leak_and_is_stable():
    records = ingest.scan(SAMPLE_DIR)
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)

    first = ingest.assign_splits(_keys(records), [0.7, 0.15, 0.15])
    assert ingest.assign_splits(_keys(shuffled), [0.7, 0.15, 0.15]) == first
    assert set(first) == {r.patient_id for r in records}  # one split per patient

    per_split = {name: [r for r in records if first[r.patient_id] == name]
                 for name in features.SPLIT_NAMES}
    total = len(records)
    assert 0.62 < len(per_split["train"]) / total < 0.78
    for name in ("eval", "test"):
        assert 0.08 < len(per_split[name]) / total < 0.22
        assert {r.label for r in per_split[name]} == set(features.CLASS_NAMES)


def test_split_of_a_multi_image_patient_stays_together():
    keys = [("p1", "COVID-19", "s")] * 5 + [(f"q{i}", "Normal", "s") for i in range(20)]
    assignment = ingest.assign_splits(keys, [0.7, 0.15, 0.15])
    assert len({assignment[p] for p, _, _ in keys if p == "p1"}) == 1
    assert sorted(assignment.values()).count("train") == 15  # 14 Normal + the COVID patient


def test_split_seed_changes_assignment():
    keys = [(f"p{i}", "Normal", "s") for i in range(40)]
    assert ingest.assign_splits(keys, [0.7, 0.15, 0.15], seed=0) != \
        ingest.assign_splits(keys, [0.7, 0.15, 0.15], seed=1)


@pytest.mark.parametrize("proportions", [[0.5, 0.5], [0.8, 0.3, -0.1], [0.5, 0.2, 0.2]])
def test_split_rejects_bad_proportions(proportions):
    with pytest.raises(ingest.DataError, match="split proportions"):
        ingest.assign_splits([("p", "Normal", "s")], proportions)
