import glob
import gzip
import hashlib
import os

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs

from components import code_digest
from components.image_example_gen import component, executor
from conftest import make_subset, upload
from imaging import ingest, quarantine
from imaging.conftest import PATIENT_ID, PATIENT_NAME, make_messy_data
from models import features


def _read(uri, split):
    files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*.gz"))
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _value(example, key):
    feature = example.features.feature[key]
    return feature.bytes_list.value[0] if feature.bytes_list.value else feature.int64_list.value[0]


def _run_executor(data_dir, out_dir, split_percentages=(70, 15, 15),
                  options=ingest.IngestOptions()) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    gen = component.ImageExampleGen(data_dir, split_percentages, options)
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: data_dir,
        standard_component_specs.INPUT_CONFIG_KEY: gen.exec_properties["input_config"],
        standard_component_specs.OUTPUT_CONFIG_KEY: gen.exec_properties["output_config"],
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.CUSTOM_CONFIG_KEY: gen.exec_properties["custom_config"],
    }
    executor.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]},
                           exec_properties)
    return examples


def test_executor_writes_patient_split_examples_with_original_bytes(tmp_path):
    data_dir = make_subset(str(tmp_path / "data"), per_class=8)
    examples = _run_executor(data_dir, str(tmp_path / "out"), (60, 20, 20))

    assert artifact_utils.decode_split_names(examples.split_names) == features.SPLIT_NAMES
    by_split = {split: _read(examples.uri, split) for split in features.SPLIT_NAMES}
    assert sum(len(v) for v in by_split.values()) == 24
    patients = {split: {_value(e, features.PATIENT_ID_KEY) for e in v}
                for split, v in by_split.items()}
    assert not patients["train"] & patients["test"]
    assert not patients["train"] & patients["eval"]
    assert not patients["eval"] & patients["test"]
    for split in ("eval", "test"):
        assert {_value(e, features.LABEL_KEY).decode() for e in by_split[split]} == \
            set(features.CLASS_NAMES)

    manifest = {row.split(",")[0]: row for row in
                open(os.path.join(data_dir, "manifest.csv")).read().splitlines()[1:]}
    example = by_split["train"][0]
    path = next(os.path.join(data_dir, f) for f in manifest
                if open(os.path.join(data_dir, f), "rb").read() == _value(example, features.IMAGE_KEY))
    height, width = tf.io.decode_jpeg(open(path, "rb").read()).shape[:2]
    assert (_value(example, features.HEIGHT_KEY), _value(example, features.WIDTH_KEY)) == \
        (height, width)


def test_bad_files_are_quarantined_and_the_valid_ones_still_split(tmp_path):
    expected = make_messy_data(str(tmp_path / "data"))
    options = ingest.IngestOptions(max_quarantined_fraction=0.5)
    examples = _run_executor(str(tmp_path / "data"), str(tmp_path / "out"), options=options)

    by_split = {split: _read(examples.uri, split) for split in features.SPLIT_NAMES}
    stored = [e for split in by_split.values() for e in split]
    assert len(stored) == sum(o in ("ok", "converted") for o in expected.values()) == 14
    digests = [hashlib.sha256(_value(e, features.IMAGE_KEY)).hexdigest() for e in stored]
    assert len(set(digests)) == len(digests)  # the duplicate is in no split
    report = quarantine.load(os.path.join(examples.uri, quarantine.REPORT_NAME))
    _, checked = ingest.check_data(str(tmp_path / "data"), options)
    assert report == checked  # the executor and `cxr check-data` agree file by file
    assert {os.path.relpath(q.path, tmp_path / "data"): q.reason
            for q in report.quarantined} == {
        p: o for p, o in expected.items() if o not in ("ok", "converted")}

    dicom_example = next(e for e in stored if _value(e, features.VIEW_KEY) == b"PA")
    assert _value(dicom_example, features.AGE_GROUP_KEY) == b"adult"
    assert [_value(e, features.SEX_KEY) for e in stored].count(b"unknown") == len(stored) - 1
    assert _value(dicom_example, features.SEX_KEY) == b"F"  # PatientSex; the folders have none
    assert _value(dicom_example, features.IMAGE_KEY).startswith(b"\x89PNG")
    assert (_value(dicom_example, features.HEIGHT_KEY), _value(dicom_example, features.WIDTH_KEY)) \
        == (80, 96)
    serialized = b"".join(e.SerializeToString() for e in stored)
    assert PATIENT_NAME.encode() not in serialized and PATIENT_ID.encode() not in serialized


def test_too_many_quarantined_files_fail_the_executor_after_writing_the_report(tmp_path):
    make_messy_data(str(tmp_path / "data"))
    artifact_uri = tmp_path / "ImageExampleGen" / "examples" / "7"  # TFX's layout
    kept = tmp_path / "ImageExampleGen" / "quarantine" / "7" / quarantine.REPORT_NAME
    with pytest.raises(quarantine.QuarantineError,
                       match=r"^7 of 21 files \(33%\) were quarantined, more than the allowed 10%"):
        _run_executor(str(tmp_path / "data"), str(artifact_uri))
    # TFX deletes a failed execution's artifact folder; the copy beside it stays.
    assert len(quarantine.load(str(kept)).quarantined) == 7


def test_fingerprint_sees_changes_inside_class_folders(tmp_path):
    (tmp_path / "Normal").mkdir()
    image = tmp_path / "Normal" / "a.png"
    image.write_bytes(b"1")
    before = component.fingerprint_tree(str(tmp_path))
    assert component.fingerprint_tree(str(tmp_path)) == before
    image.write_bytes(b"22")
    assert component.fingerprint_tree(str(tmp_path)) != before


def test_data_on_a_non_local_filesystem_is_read_through_gfile(tmp_path):
    """ram:// stands in for gs://: both go through tf.io.gfile, which Dataflow workers use."""
    local = make_subset(str(tmp_path / "data"), per_class=1)
    remote = f"ram://{tmp_path.name}/data"
    for directory, _, files in os.walk(local):
        for name in files:
            target = os.path.join(remote, os.path.relpath(os.path.join(directory, name), local))
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(os.path.join(directory, name), target)
    records = ingest.scan(remote).records
    assert [r.path.replace(remote, local) for r in records] == [
        r.path for r in ingest.scan(local).records]
    example = executor.accepted_to_example(ingest.inspect_record(records[0],
                                                                 ingest.IngestOptions().file_checks))
    with open(records[0].path.replace(remote, local), "rb") as f:
        assert _value(example, features.IMAGE_KEY) == f.read()
    assert component.fingerprint_tree(remote).startswith("files:4,")


def test_executor_reads_the_data_from_and_writes_examples_to_cloud_storage(tmp_path, gcs_dir):
    data_dir = upload(make_subset(str(tmp_path / "data"), per_class=4), f"{gcs_dir}/data")
    examples = _run_executor(data_dir, f"{gcs_dir}/examples")
    by_split = {split: _read(examples.uri, split) for split in features.SPLIT_NAMES}
    assert sum(len(v) for v in by_split.values()) == 12
    assert all(by_split.values())
    report = quarantine.load(os.path.join(examples.uri, quarantine.REPORT_NAME))
    assert report.quarantined == [] and report.accepted == 12


def test_cache_key_carries_the_ingestion_code_digest(tmp_path):
    gen = component.ImageExampleGen(str(tmp_path),
                                    options=ingest.IngestOptions(min_image_side=32))
    assert code_digest.component_sha256("image_example_gen") in \
        gen.exec_properties["custom_config"]
    assert executor.options_from_exec_properties(gen.exec_properties) == \
        ingest.IngestOptions(min_image_side=32)


def test_splits_are_gzip_files_in_content_hash_order(tmp_path):
    data_dir = make_subset(str(tmp_path / "data"), per_class=4)
    examples = _run_executor(data_dir, str(tmp_path / "out"), (50, 25, 25))
    for split in features.SPLIT_NAMES:
        files = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
        assert len(files) == 1
        with gzip.open(files[0]) as f:  # any gzip reader: the payload is stored, not deflated
            assert len(f.read()) > 0
        digests = [hashlib.sha256(_value(e, features.IMAGE_KEY)).hexdigest()
                   for e in _read(examples.uri, split)]
        assert digests == sorted(digests)


def test_a_file_crosses_the_beam_stages_as_a_small_tuple():
    """What ingestion's collections and lists hold per file: Beam's own encoding of a plain
    tuple, less than half the size of the pickled CheckedFile that crossed before."""
    record = ingest.ImageRecord("/data/xray/images/000123.jpg", "Normal", "patient-0042",
                                "cxr4", "PA", "adult", "F")
    checked = ingest.CheckedFile(record, "ab" * 32, 1024, 1024, "exif_rotation")
    row = executor._row(checked)
    assert executor._checked(row) == checked
    coder = beam.coders.registry.get_coder(object)  # what Beam uses for these collections
    assert coder.decode(coder.encode(row)) == row
    assert len(coder.encode(row)) <= 180 and len(coder.encode(checked)) > 2 * len(coder.encode(row))


def test_split_assignment_holds_one_entry_per_patient_not_per_file(monkeypatch):
    real = ingest.assign_splits
    received = []

    def recording(keys, *args, **kwargs):
        received.append(len(keys))
        return real(keys, *args, **kwargs)

    monkeypatch.setattr(ingest, "assign_splits", recording)
    files = [(f"p{i % 30}", features.CLASS_NAMES[i % 3]) for i in range(3000)]
    rows = [executor._row(ingest.CheckedFile(ingest.ImageRecord(f"/d/{i}.png", label, patient),
                                             f"{i:064x}", 64, 64))
            for i, (patient, label) in enumerate(files)]
    proportions = [0.7, 0.15, 0.15]
    with TestPipeline() as pipeline:
        assignment = (pipeline | beam.Create(rows)
                      | executor._AssignPatients(proportions, features.SPLIT_NAMES))
        assert_that(assignment, equal_to([real(files, proportions)]))
    assert received == [30]  # 30 patients, one label each: 30 entries for 3,000 files
