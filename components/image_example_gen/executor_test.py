import glob
import os

import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import component, executor
from conftest import make_subset
from models import features


def _read(uri, split):
    files = glob.glob(os.path.join(uri, f"Split-{split}", "*.gz"))
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _value(example, key):
    feature = example.features.feature[key]
    return feature.bytes_list.value[0] if feature.bytes_list.value else feature.int64_list.value[0]


def test_executor_writes_patient_split_examples_with_original_bytes(tmp_path):
    data_dir = make_subset(str(tmp_path / "data"), per_class=8)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "out")
    gen = component.ImageExampleGen(data_dir, split_percentages=(60, 20, 20))
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: data_dir,
        standard_component_specs.INPUT_CONFIG_KEY: gen.exec_properties["input_config"],
        standard_component_specs.OUTPUT_CONFIG_KEY: gen.exec_properties["output_config"],
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
    }

    executor.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]},
                           exec_properties)

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


def test_unreadable_file_keeps_metadata_but_lacks_image(tmp_path):
    from components.image_example_gen.ingest import ImageRecord
    missing = executor.record_to_example(ImageRecord(str(tmp_path / "gone.png"), "Normal", "p1"))
    assert features.IMAGE_KEY not in missing.features.feature
    assert _value(missing, features.LABEL_KEY) == b"Normal"
    (tmp_path / "junk.png").write_bytes(b"<html>not found</html>")
    junk = executor.record_to_example(ImageRecord(str(tmp_path / "junk.png"), "Normal", "p1"))
    assert _value(junk, features.IMAGE_KEY) == b"<html>not found</html>"
    assert features.HEIGHT_KEY not in junk.features.feature


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
    from components.image_example_gen import ingest
    local = make_subset(str(tmp_path / "data"), per_class=1)
    remote = f"ram://{tmp_path.name}/data"
    for directory, _, files in os.walk(local):
        for name in files:
            target = os.path.join(remote, os.path.relpath(os.path.join(directory, name), local))
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(os.path.join(directory, name), target)
    records = ingest.scan(remote)
    assert [r.path.replace(remote, local) for r in records] == [
        r.path for r in ingest.scan(local)]
    example = executor.record_to_example(records[0])
    with open(records[0].path.replace(remote, local), "rb") as f:
        assert _value(example, features.IMAGE_KEY) == f.read()
    assert component.fingerprint_tree(remote).startswith("files:4,")
