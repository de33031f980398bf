"""The offline spec runner's parts that need no pipeline run: parameters, resolvers, staging."""
import pytest

from pipeline import spec_runner

JOB = {"pipelineSpec": {"root": {"inputDefinitions": {"parameters": {
    "data_root": {"type": "STRING"}, "epochs": {"type": "INT"},
    "min_macro_auc": {"type": "DOUBLE"}}}}},
    "runtimeConfig": {"gcsOutputDirectory": "gs://cxr-b/root", "parameters": {
        "data_root": {"stringValue": "gs://cxr-b/data"}, "epochs": {"intValue": "10"},
        "min_macro_auc": {"doubleValue": 0.8}}}}


def test_runtime_parameters_come_from_the_spec_and_are_overridden_with_their_types():
    assert spec_runner.parameter_values(JOB, {}) == {
        "data_root": "gs://cxr-b/data", "epochs": 10, "min_macro_auc": 0.8}
    assert spec_runner.parameter_values(JOB, {"epochs": "3", "min_macro_auc": "0.5"}) == {
        "data_root": "gs://cxr-b/data", "epochs": 3, "min_macro_auc": 0.5}


def test_bad_runtime_parameters_are_one_line_errors():
    with pytest.raises(spec_runner.SpecRunError, match="unknown runtime parameter 'epoch'; "
                                                       "the spec declares data_root, epochs"):
        spec_runner.parameter_values(JOB, {"epoch": "3"})
    with pytest.raises(spec_runner.SpecRunError, match=r"epochs='three' is not a valid int"):
        spec_runner.parameter_values(JOB, {"epochs": "three"})
    with pytest.raises(spec_runner.SpecRunError, match=r"epochs='2.5' is not a valid int"):
        spec_runner.parameter_values(JOB, {"epochs": "2.5"})


def test_resolver_queries_find_the_newest_matching_artifact(tmp_path):
    store = spec_runner.ArtifactStore(str(tmp_path))
    prefix = spec_runner.ARTIFACT_NAME_PREFIX
    store.record({"name": prefix + "m1", "uri": "/m1", "schema_title": "tfx.Model",
                  "metadata": {}})
    store.record({"name": prefix + "b1", "uri": "/b1", "schema_title": "tfx.ModelBlessing",
                  "metadata": {"blessed": 1.0, "current_model_id": prefix + "m1"}})
    store.record({"name": prefix + "b2", "uri": "/b2", "schema_title": "tfx.ModelBlessing",
                  "metadata": {"blessed": 0.0, "current_model_id": prefix + "m2"}})
    blessing = store.query('schema_title="tfx.ModelBlessing" AND state=LIVE AND '
                           'metadata.blessed.number_value=1')
    assert blessing["uri"] == "/b1"
    model_filter = spec_runner._fill_artifact_metadata(
        'schema_title="tfx.Model" AND state=LIVE AND '
        'name="{{$.inputs.artifacts[\'input\'].metadata[\'current_model_id\']}}"',
        {"input": [blessing]})
    assert store.query(model_filter)["uri"] == "/m1"
    # No blessed model yet: the second query has nothing to ask for.
    assert spec_runner._fill_artifact_metadata(
        "name=\"{{$.inputs.artifacts['input'].metadata['current_model_id']}}\"",
        {"input": []}) is None
    with pytest.raises(spec_runner.SpecRunError, match="not supported offline"):
        store.query("create_time=1")


def test_stage_needs_a_local_folder_and_a_gs_uri(tmp_path):
    assert spec_runner.parse_stage(f"{tmp_path}=gs://cxr-b/data/") == (str(tmp_path), "gs://cxr-b/data")
    with pytest.raises(spec_runner.SpecRunError, match="expected LOCAL_DIR=gs://BUCKET/PATH"):
        spec_runner.parse_stage(f"{tmp_path}=/tmp/x")
    with pytest.raises(spec_runner.SpecRunError, match="is not a folder"):
        spec_runner.parse_stage(f"{tmp_path}/missing=gs://cxr-b/data")


def test_buckets_are_read_from_the_spec_and_the_staged_uris():
    assert spec_runner.buckets_named(JOB, ["gs://other-bucket/x"]) == ["cxr-b", "other-bucket"]
