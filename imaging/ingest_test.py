import os
import random
import shutil

import numpy as np
import pytest
from PIL import Image

from imaging import ingest, quarantine
from imaging.conftest import (PATIENT_ID, PATIENT_NAME, gradient,
                                                   make_dicom, make_messy_data)
from conftest import SAMPLE_DIR, sample_rows
from imaging import prepare
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

    records = ingest.scan(str(tmp_path)).records

    labels = {os.path.relpath(r.path, tmp_path): r.label for r in records}
    assert labels == {
        "COVID19/a.png": "COVID-19", "covid-19/a.png": "COVID-19",
        "PNEUMONIA/a.png": "Pneumonia", "viral/a.png": "Pneumonia",
        "Bacterial/a.png": "Pneumonia", "NORMAL/a.png": "Normal",
        "No Finding/a.png": "Normal", "Normal/nested/person12_virus_34.jpeg": "Normal",
        "Normal/notes.txt": "Normal",  # listed, so that the checks can quarantine it
    }
    nested = next(r for r in records if r.path.endswith("person12_virus_34.jpeg"))
    assert nested.patient_id == "person12"
    assert (nested.source, nested.view, nested.age_group) == ("unknown",) * 3


def test_unknown_class_folder_is_an_error_listing_the_known_labels(tmp_path):
    _image(str(tmp_path / "Normal" / "a.png"))
    for name in ("x.png", "y.png"):
        _image(str(tmp_path / "Lung_Opacity" / name))
    with pytest.raises(ingest.DataError) as info:
        ingest.scan(str(tmp_path))
    message = str(info.value)
    assert message.startswith("unknown label(s) Lung_Opacity (2 files); known labels: "
                              "COVID-19, Pneumonia, Normal")
    assert "--ignore-unknown-labels" in message and "\n" not in message


def test_empty_manifest_label_is_named_as_such(tmp_path):
    _image(str(tmp_path / "a.png"))
    (tmp_path / "manifest.csv").write_text("file,label\na.png,\n")
    with pytest.raises(ingest.DataError, match=r"^unknown label\(s\) \(empty\) \(1 files\); "):
        ingest.scan(str(tmp_path))


def test_unknown_labels_are_skipped_apart_from_bad_files_when_asked(tmp_path):
    _image(str(tmp_path / "Normal" / "a.png"))
    _image(str(tmp_path / "Lung_Opacity" / "x.png"))
    scanned = ingest.scan(str(tmp_path), ignore_unknown_labels=True)
    assert [os.path.relpath(r.path, tmp_path) for r in scanned.records] == ["Normal/a.png"]
    assert scanned.quarantined == []
    assert [(os.path.relpath(s.path, tmp_path), s.label) for s in scanned.skipped] == \
        [("Lung_Opacity/x.png", "Lung_Opacity")]
    assert scanned.files_seen == 2


def test_skipped_files_do_not_count_against_the_quarantined_fraction(tmp_path):
    """A skipped folder as large as the data set itself does not stop the run; one bad file
    in four checked ones does, and the share is of the files checked."""
    def distinct(path, value):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("L", (80, 70), value).save(path)

    for index in range(3):
        distinct(str(tmp_path / "Normal" / f"n{index}.png"), index * 40)
        distinct(str(tmp_path / "COVID" / f"c{index}.png"), index * 40 + 5)
        distinct(str(tmp_path / "PNEUMONIA" / f"p{index}.png"), index * 40 + 10)
    for index in range(20):
        distinct(str(tmp_path / "Lung_Opacity" / f"o{index}.png"), index * 10 + 2)
    options = ingest.IngestOptions(ignore_unknown_labels=True, max_quarantined_fraction=0.1)
    _, report = ingest.check_data(str(tmp_path), options)
    assert (report.files_seen, report.files_checked, len(report.skipped)) == (29, 9, 20)
    assert report.quarantined == [] and report.problems() == []
    assert report.skipped_per_label() == {"Lung_Opacity": 20}
    assert report.summary_lines()[-1] == ("Skipped on request (--ignore-unknown-labels): 20 "
                                          "files, not counted as quarantined (Lung_Opacity 20)")
    (tmp_path / "Normal" / "broken.png").write_bytes(b"not an image")
    _, report = ingest.check_data(str(tmp_path), options)
    assert report.problems() == [] and len(report.quarantined) == 1  # 1 of 10: not over 10%
    (tmp_path / "COVID" / "broken.png").write_bytes(b"not an image either")
    _, report = ingest.check_data(str(tmp_path), options)
    assert report.problems()[0].startswith("2 of 11 files (18%) were quarantined")
    saved = quarantine.IngestionReport.from_json(report.to_json())
    assert saved.skipped == report.skipped


def test_manifest_with_extra_and_missing_optional_columns(tmp_path):
    _image(str(tmp_path / "img" / "IM-0456-0001.jpeg"), fmt="JPEG")
    _image(str(tmp_path / "img" / "b.png"))
    (tmp_path / "manifest.csv").write_text(
        "file,label,site,patient_id,view\n"
        "img/IM-0456-0001.jpeg,covid,A,,PA\n"
        "img/b.png,Normal,B,p7,\n")

    records = ingest.scan(str(tmp_path)).records

    assert [(r.label, r.patient_id, r.source, r.view, r.age_group, r.sex) for r in records] == [
        ("COVID-19", "IM-0456", "unknown", "PA", "unknown", "unknown"),
        ("Normal", "p7", "unknown", "unknown", "unknown", "unknown"),
    ]


def test_manifest_sex_column_is_normalised_to_the_vocabulary(tmp_path):
    cells = {"a": "M", "b": "female", "c": " o ", "d": "", "e": "U", "f": "Unknown", "g": "f"}
    for name in cells:
        _image(str(tmp_path / f"{name}.png"))
    (tmp_path / "manifest.csv").write_text("file,label,sex\n" + "".join(
        f"{name}.png,Normal,{cell}\n" for name, cell in cells.items()))

    records = ingest.scan(str(tmp_path)).records

    assert {os.path.basename(r.path): r.sex for r in records} == {
        "a.png": "M", "b.png": "F", "c.png": "O", "d.png": "unknown", "e.png": "unknown",
        "f.png": "unknown", "g.png": "F"}


def test_manifest_sex_outside_the_vocabulary_stops_with_one_line(tmp_path):
    for name in ("a", "b", "c", "d"):
        _image(str(tmp_path / f"{name}.png"))
    (tmp_path / "manifest.csv").write_text(
        "file,label,sex\na.png,Normal,M\nb.png,Normal,X\nc.png,Normal,2\nd.png,covid,X\n")
    with pytest.raises(ingest.DataError) as info:
        ingest.scan(str(tmp_path))
    assert str(info.value) == (
        f"{tmp_path / 'manifest.csv'}: unknown sex value(s) '2' (1 row, first on line 4), "
        "'X' (2 rows, first on line 3); use one of m, male, f, female, o, other, u, unknown "
        "(any case), or leave the cell empty when it is not known")


def test_sex_comes_from_the_manifest_and_is_unknown_without_the_column(tmp_path):
    records = ingest.scan(SAMPLE_DIR).records
    by_file = {os.path.join(SAMPLE_DIR, row["file"]): row["sex"] for row in sample_rows()}
    assert len(records) == 120 and {r.path: r.sex for r in records} == by_file
    assert {r.sex for r in records} == {"M", "F", features.UNKNOWN}
    shutil.copytree(os.path.join(SAMPLE_DIR, "images"), tmp_path / "images")
    columns = [c for c in sample_rows()[0] if c != "sex"]
    (tmp_path / "manifest.csv").write_text(
        ",".join(columns) + "\n" + "".join(",".join(f'"{row[c]}"' for c in columns) + "\n"
                                          for row in sample_rows()))
    assert {r.sex for r in ingest.scan(str(tmp_path)).records} == {features.UNKNOWN}


def test_dicom_header_gives_sex_only_where_the_manifest_leaves_it_empty(tmp_path):
    gray = np.asarray(gradient()).astype(np.uint16) * 16
    for name, header_sex in (("a.dcm", "F"), ("b.dcm", "F"), ("c.dcm", "")):
        (tmp_path / name).write_bytes(make_dicom(gray, bits_stored=12, PatientSex=header_sex))
    (tmp_path / "manifest.csv").write_text(
        "file,label,sex\na.dcm,Normal,\nb.dcm,Normal,male\nc.dcm,Normal,\n")

    accepted, report = ingest.check_data(str(tmp_path), ingest.IngestOptions())

    assert report.quarantined == []
    assert {os.path.basename(a.record.path): a.record.sex for a in accepted} == {
        "a.dcm": "F", "b.dcm": "M", "c.dcm": "unknown"}
    assert all(PATIENT_ID not in repr(a.record) and PATIENT_NAME not in repr(a.record)
               for a in accepted)


def test_manifest_missing_required_column_is_named(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,patient_id\na.png,p1\n")
    with pytest.raises(ingest.DataError, match="lacks required column.*label"):
        ingest.scan(str(tmp_path))


def test_manifest_row_without_its_file_is_quarantined(tmp_path):
    _image(str(tmp_path / "img" / "a.png"))
    (tmp_path / "manifest.csv").write_text("file,label\nimg/a.png,Normal\nimg/gone.png,covid\n")
    scanned = ingest.scan(str(tmp_path))
    assert [r.path for r in scanned.records] == [str(tmp_path / "img" / "a.png")]
    assert [(q.path, q.reason, q.detail) for q in scanned.quarantined] == [
        (str(tmp_path / "img" / "gone.png"), prepare.MISSING,
         "manifest.csv line 3 names 'img/gone.png', which is not a file")]


def test_missing_and_empty_data_dirs_are_clear_errors(tmp_path):
    with pytest.raises(ingest.DataError, match="data directory not found"):
        ingest.scan(str(tmp_path / "nope"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ingest.DataError, match="no images found"):
        ingest.scan(str(tmp_path))


def _keys(records):
    return [(r.patient_id, r.label) for r in records]


def test_split_has_no_patient_leak_and_is_stable():
    records = ingest.scan(SAMPLE_DIR).records
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)

    first = ingest.assign_splits(_keys(records), [0.7, 0.15, 0.15])
    assert ingest.assign_splits(_keys(shuffled), [0.7, 0.15, 0.15]) == first
    assert set(first) == {r.patient_id for r in records}  # one split per patient

    per_split = {name: [r for r in records if first[r.patient_id] == name]
                 for name in features.SPLIT_NAMES}
    # Shares of a per-patient hash on ~100 patients: 70 % +- 2 standard deviations.
    total = len(records)
    assert 0.6 < len(per_split["train"]) / total < 0.8
    for name in ("eval", "test"):
        assert 0.06 < len(per_split[name]) / total < 0.25
        assert {r.label for r in per_split[name]} == set(features.CLASS_NAMES)


def _patients(prefix, count, label):
    return [(f"{prefix}{i}", label) for i in range(count)]


def test_split_of_existing_patients_does_not_change_when_patients_are_added():
    keys = [key for label in features.CLASS_NAMES for key in _patients(label, 200, label)]
    added = [key for label in features.CLASS_NAMES for key in _patients(f"new-{label}", 40, label)]
    before = ingest.assign_splits(keys, [0.7, 0.15, 0.15])
    after = ingest.assign_splits(keys + added, [0.7, 0.15, 0.15])
    assert {patient: after[patient] for patient in before} == before
    assert len(after) == len(before) + len(added)
    shares = [list(after.values()).count(name) / len(after) for name in features.SPLIT_NAMES]
    assert shares == pytest.approx([0.7, 0.15, 0.15], abs=0.04)


@pytest.mark.parametrize("per_class", [3, 4, 8])
def test_small_data_has_every_class_in_every_split(per_class):
    keys = [key for label in features.CLASS_NAMES for key in _patients(label, per_class, label)]
    assignment = ingest.assign_splits(keys, [0.7, 0.15, 0.15])
    for name in features.SPLIT_NAMES:
        assert {label for patient, label in keys if assignment[patient] == name} == \
            set(features.CLASS_NAMES), name
    # Moving a patient into a split never empties the split it came from.
    assert all(list(assignment.values()).count(name) for name in features.SPLIT_NAMES)


def test_split_of_a_patient_with_two_classes_stays_together():
    keys = ([("p1", "COVID-19")] * 3 + [("p1", "Normal")] * 2
            + [(f"q{i}", "Normal") for i in range(20)] + [(f"c{i}", "COVID-19") for i in range(8)])
    assignment = ingest.assign_splits(keys, [0.7, 0.15, 0.15])
    assert set(assignment) == {p for p, _ in keys}
    for name in features.SPLIT_NAMES:
        assert {label for patient, label in keys if assignment[patient] == name} == \
            {"COVID-19", "Normal"}, name


def test_a_zero_share_split_stays_empty():
    keys = [key for label in features.CLASS_NAMES for key in _patients(label, 10, label)]
    assignment = ingest.assign_splits(keys, [0.8, 0.0, 0.2])
    assert "eval" not in assignment.values()


def test_split_seed_changes_assignment():
    keys = [(f"p{i}", "Normal") for i in range(40)]
    assert ingest.assign_splits(keys, [0.7, 0.15, 0.15], seed=0) != \
        ingest.assign_splits(keys, [0.7, 0.15, 0.15], seed=1)


@pytest.mark.parametrize("proportions", [[0.5, 0.5], [0.8, 0.3, -0.1], [0.5, 0.2, 0.2]])
def test_split_rejects_bad_proportions(proportions):
    with pytest.raises(ingest.DataError, match="split proportions"):
        ingest.assign_splits([("p", "Normal")], proportions)


def test_check_data_gives_every_file_an_example_or_a_record(tmp_path):
    expected = make_messy_data(str(tmp_path))
    options = ingest.IngestOptions(max_quarantined_fraction=0.5)

    accepted, report = ingest.check_data(str(tmp_path), options)

    kept = {os.path.relpath(a.record.path, tmp_path) for a in accepted}
    rejected = {os.path.relpath(q.path, tmp_path): q.reason for q in report.quarantined}
    assert kept == {p for p, outcome in expected.items() if outcome in ("ok", "converted")}
    assert rejected == {p: outcome for p, outcome in expected.items()
                        if outcome not in ("ok", "converted")}
    assert report.files_seen == len(expected) == 21
    assert report.accepted_per_class == {"COVID-19": 5, "Pneumonia": 4, "Normal": 5}
    assert report.counts_per_reason() == {
        prepare.NOT_AN_IMAGE: 2, prepare.CORRUPT: 1, prepare.DUPLICATE: 1, prepare.EMPTY: 1,
        prepare.TOO_LARGE: 1, prepare.TOO_SMALL: 1}
    assert {os.path.relpath(c.path, tmp_path): c.conversion for c in report.converted} == {
        "COVID/rotated.jpg": "EXIF orientation 8 applied",
        "NORMAL/scan0001": "DICOM converted to 8-bit PNG"}
    duplicate = next(q for q in report.quarantined if q.reason == prepare.DUPLICATE)
    first_covid = sorted(p for p in expected if p.startswith("COVID/covid"))[0]
    assert duplicate.detail == (f"same content as {tmp_path / first_covid} "
                                "(labelled Pneumonia here, COVID-19 there)")
    scan = next(a for a in accepted if a.record.path.endswith("scan0001"))
    assert (scan.record.view, scan.record.age_group, scan.record.sex) == ("PA", "adult", "F")
    assert {a.record.sex for a in accepted if a is not scan} == {features.UNKNOWN}
    assert report.problems() == []


def test_report_round_trips_and_never_holds_identifying_dicom_tags(tmp_path):
    make_messy_data(str(tmp_path / "data"))
    _, report = ingest.check_data(str(tmp_path / "data"), ingest.IngestOptions())
    report.write(str(tmp_path / "out" / "report.json"))
    report.write(str(tmp_path / "out" / "report.csv"))
    assert quarantine.load(str(tmp_path / "out" / "report.json")) == report
    rows = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert rows[0] == "path,reason,detail" and len(rows) == 1 + len(report.quarantined) == 8
    for name in ("report.json", "report.csv"):
        assert PATIENT_NAME.split("^")[0] not in (tmp_path / "out" / name).read_text()


def test_too_many_quarantined_files_or_an_empty_class_stop_the_run(tmp_path):
    make_messy_data(str(tmp_path))
    _, report = ingest.check_data(str(tmp_path), ingest.IngestOptions())
    assert report.problems() == [
        "7 of 21 files (33%) were quarantined, more than the allowed 10% (not an image 2, "
        "corrupt or truncated image 1, duplicate image 1, empty file 1, image too large 1, "
        "image too small 1)"]
    with pytest.raises(quarantine.QuarantineError, match="is in REPORT$"):
        report.raise_on_problems("REPORT")
    for name in os.listdir(tmp_path / "PNEUMONIA"):
        os.remove(tmp_path / "PNEUMONIA" / name)
    _, report = ingest.check_data(str(tmp_path), ingest.IngestOptions(max_quarantined_fraction=1))
    assert report.problems() == [
        "no valid image of class Pneumonia; every class of COVID-19, Pneumonia, Normal needs images"]


@pytest.mark.parametrize("settings,message", [
    ({"min_image_side": 0}, "min_image_side must be at least 1"),
    ({"min_image_side": 100, "max_image_pixels": 9999}, "max_image_pixels must be at least"),
    ({"max_quarantined_fraction": 1.5}, "max_quarantined_fraction must be between 0 and 1"),
])
def test_bad_ingest_options_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        ingest.IngestOptions(**settings)


def test_checked_files_carry_no_bytes_and_reload_gives_what_the_check_accepted(tmp_path):
    plain, rotated = tmp_path / "plain.jpg", tmp_path / "rotated.jpg"
    gradient().save(plain, "JPEG")
    exif = Image.Exif()
    exif[prepare.EXIF_ORIENTATION_TAG] = 6
    gradient().save(rotated, "JPEG", exif=exif)
    options = ingest.IngestOptions().file_checks
    for path in (plain, rotated):
        accepted = ingest.inspect_record(ingest.ImageRecord(str(path), "Normal", "p1"), options)
        checked = ingest.without_bytes(accepted)
        assert not any(isinstance(v, bytes) for v in vars(checked).values())
        assert ingest.reload(checked, options) == accepted

    checked = ingest.without_bytes(ingest.inspect_record(
        ingest.ImageRecord(str(plain), "Normal", "p1"), options))
    gradient(90, 80).save(plain, "JPEG")
    with pytest.raises(ingest.FileChangedError, match="plain.jpg changed while it was being "
                                                      "ingested"):
        ingest.reload(checked, options)
