import os
import shutil

import pytest
import tensorflow_data_validation as tfdv
from tfx.types import standard_artifacts, standard_component_specs

from components.curated_schema import executor
from components.curated_schema.component import CuratedSchemaImporter
from schemas import SCHEMA_FILE


def _run(component: CuratedSchemaImporter, out_dir: str) -> str:
    schema = standard_artifacts.Schema()
    schema.uri = out_dir
    executor.Executor().Do({}, {standard_component_specs.SCHEMA_KEY: [schema]},
                           component.exec_properties)
    return os.path.join(out_dir, "schema.pbtxt")


def test_the_digest_follows_the_content_not_the_path(tmp_path):
    copy = tmp_path / "elsewhere" / "schema.pbtxt"
    copy.parent.mkdir()
    shutil.copy(SCHEMA_FILE, copy)
    original = CuratedSchemaImporter(SCHEMA_FILE).exec_properties[executor.SCHEMA_SHA256_KEY]
    assert CuratedSchemaImporter(str(copy)).exec_properties[executor.SCHEMA_SHA256_KEY] == original

    copy.write_text(copy.read_text() + "\n# reviewed again\n")
    edited = CuratedSchemaImporter(str(copy)).exec_properties[executor.SCHEMA_SHA256_KEY]
    assert edited != original and len(edited) == 64


def test_imports_the_curated_schema_unchanged(tmp_path):
    written = _run(CuratedSchemaImporter(SCHEMA_FILE), str(tmp_path / "out"))
    assert tfdv.load_schema_text(written) == tfdv.load_schema_text(SCHEMA_FILE)


def test_a_schema_edited_after_the_pipeline_was_built_is_refused(tmp_path):
    schema_file = tmp_path / "schema.pbtxt"
    shutil.copy(SCHEMA_FILE, schema_file)
    component = CuratedSchemaImporter(str(schema_file))
    schema_file.write_text(schema_file.read_text().replace('name: "sex"', 'name: "gender"'))
    with pytest.raises(ValueError, match=r"schema file .* has sha256 .* not .* as when the "
                                         r"pipeline was built: rebuild"):
        _run(component, str(tmp_path / "out"))
    assert not (tmp_path / "out" / "schema.pbtxt").exists()


def test_a_digest_given_for_a_file_in_an_image_is_kept(tmp_path):
    digest = executor.file_sha256(SCHEMA_FILE)
    component = CuratedSchemaImporter("/cxr/schemas/schema.pbtxt", schema_sha256=digest)
    assert component.exec_properties[executor.SCHEMA_SHA256_KEY] == digest


def test_the_schema_artifact_can_live_on_cloud_storage(gcs_dir):
    import tensorflow as tf
    written = _run(CuratedSchemaImporter(SCHEMA_FILE), f"{gcs_dir}/schema")
    assert written.startswith("gs://")
    with tf.io.gfile.GFile(written) as f:
        assert f.read() == open(SCHEMA_FILE).read()
