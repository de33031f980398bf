"""`cxr run --engine local` with several Beam workers, `cxr compile` and `cxr submit`."""
import glob
import json
import os

from conftest import make_subset
from cxr import cli
from pipeline import summary
from pipeline.config import PipelineConfig

IMAGE = "europe-docker.pkg.dev/test-project/cxr/pipeline:test"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_local_run_with_two_direct_workers_and_the_tuner_completes(tmp_path):
    data_dir = make_subset(str(tmp_path / "data"), per_class=8)
    out = tmp_path / "out"
    assert cli.main(["run", "--engine", "local", "--beam-direct-workers", "2",
                     "--data-dir", data_dir, "--output-dir", str(out),
                     "--model", "baseline_cnn", "--epochs", "1", "--train-steps", "1",
                     "--image-size", "64", "--batch-size", "4",
                     "--tune", "--tune-trials", "2", "--tune-epochs", "1",
                     "--min-covid-recall", "0", "--min-macro-auc", "0"]) == 0
    result = summary.summarize(PipelineConfig(data_dir=data_dir, output_dir=str(out)))
    states = result.execution_states
    for node in ("ImageExampleGen", "StatisticsGen", "Transform", "Tuner", "Trainer",
                 "Evaluator", "ModelCardGenerator", "Pusher"):
        assert states[node] == summary.COMPLETE, (node, states)
    assert os.path.isfile(os.path.join(result.pushed_model_dir, "saved_model.pb"))
    # Two trials of the search space; the best (lowest eval loss) reached Trainer, and the
    # model card says so.
    [results_file] = glob.glob(os.path.join(str(out), "pipelines", "cxr", "Tuner",
                                            "tuner_results", "*", "tuner_results.json"))
    with open(results_file) as f:
        trials = json.load(f)
    assert len(trials) == 2
    best = min(trials, key=lambda trial: trial["score"])
    with open(os.path.join(result.model_card_dir, "model_card.json")) as f:
        model = json.load(f)["model"]
    assert model["hyperparameters_source"] == "chosen by the Tuner on the eval split"
    assert model["hyperparameters"] == {k: best[k] for k in ("head_learning_rate", "dropout")}


def test_local_run_needs_a_local_output_dir_for_its_metadata(tmp_path, capsys):
    data_dir = make_subset(str(tmp_path / "data"), per_class=1)
    assert cli.main(["run", "--data-dir", data_dir, "--output-dir", "gs://bucket/out"]) == 2
    assert "--output-dir holds the local ML Metadata database" in _error_line(capsys)


def test_compile_writes_a_vertex_spec_offline_with_cloud_storage_paths(tmp_path, capsys):
    output = tmp_path / "specs" / "pipeline.json"
    assert cli.main(["compile", "--engine", "vertex", "--output", str(output),
                     "--image", IMAGE, "--pipeline-root", "gs://placeholder-bucket/root",
                     "--data-dir", "gs://placeholder-bucket/data",
                     "--serving-dir", "gs://placeholder-bucket/serving",
                     "--beam-runner", "dataflow", "--project", "test-project",
                     "--region", "europe-west4", "--dataflow-max-workers", "2"]) == 0
    assert f"Wrote {output}" in capsys.readouterr().out
    job = json.loads(output.read_text())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://placeholder-bucket/root"
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    transform_args = executors["Transform_executor"]["container"]["args"]
    assert "--max_num_workers=2" in transform_args
    assert "--temp_location=gs://placeholder-bucket/root/beam-temp" in transform_args


def test_compile_takes_the_image_and_root_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_IMAGE", IMAGE)
    monkeypatch.setenv("CXR_PIPELINE_ROOT", "gs://from-env/root")
    output = tmp_path / "pipeline.json"
    assert cli.main(["compile", "--output", str(output), "--data-dir", str(tmp_path)]) == 0
    job = json.loads(output.read_text())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://from-env/root"
    images = {e["container"]["image"] for e in
              job["pipelineSpec"]["deploymentSpec"]["executors"].values() if "container" in e}
    assert images == {IMAGE}


def test_compile_without_an_image_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CXR_IMAGE", raising=False)
    assert cli.main(["compile", "--output", str(tmp_path / "p.json"),
                     "--data-dir", str(tmp_path)]) == 2
    assert _error_line(capsys) == ("cxr: error: compiling for Vertex AI needs the pipeline "
                                   "image: pass --image or set CXR_IMAGE")


def test_dataflow_without_a_project_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CXR_PROJECT", raising=False)
    assert cli.main(["compile", "--output", str(tmp_path / "p.json"), "--image", IMAGE,
                     "--data-dir", str(tmp_path), "--beam-runner", "dataflow"]) == 2
    assert "need project: pass --project or CXR_PROJECT" in _error_line(capsys)


def test_bad_environment_value_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXR_BEAM_DIRECT_WORKERS", "two")
    assert cli.main(["run", "--data-dir", str(tmp_path)]) == 2
    assert _error_line(capsys) == ("cxr: error: environment variable "
                                   "CXR_BEAM_DIRECT_WORKERS='two' is not a valid int")


def test_submit_checks_its_inputs_before_contacting_vertex(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CXR_PROJECT", raising=False)
    assert cli.main(["submit", "--pipeline", str(tmp_path / "missing.json"),
                     "--project", "p"]) == 2
    assert "pipeline spec not found" in _error_line(capsys)
    assert cli.main(["submit", "--pipeline", str(tmp_path / "missing.json")]) == 2
    assert "no GCP project: pass --project or CXR_PROJECT" in _error_line(capsys)
    local_root = tmp_path / "local.json"
    local_root.write_text(json.dumps({"runtimeConfig": {"gcsOutputDirectory": "/tmp/root"}}))
    assert cli.main(["submit", "--pipeline", str(local_root), "--project", "p"]) == 2
    assert "pipeline root '/tmp/root' is not on Cloud Storage" in _error_line(capsys)


def test_submit_passes_runtime_parameters_with_the_spec_types(tmp_path, capsys, monkeypatch):
    """Up to the PipelineJob: the part that needs Google Cloud is replaced by a recorder."""
    from google.cloud import aiplatform

    spec = tmp_path / "pipeline.json"
    spec.write_text(json.dumps({
        "displayName": "cxr", "pipelineSpec": {"root": {"inputDefinitions": {"parameters": {
            "epochs": {"type": "INT"}, "min_macro_auc": {"type": "DOUBLE"}}}}},
        "runtimeConfig": {"gcsOutputDirectory": "gs://cxr-b/root", "parameters": {
            "epochs": {"intValue": "10"}, "min_macro_auc": {"doubleValue": 0.8}}}}))
    jobs = []

    class RecordedJob:
        resource_name = "projects/p/locations/r/pipelineJobs/cxr-1"

        def __init__(self, **kwargs):
            jobs.append(kwargs)

        def submit(self, service_account=None):
            jobs[-1]["service_account"] = service_account

    monkeypatch.setattr(aiplatform, "PipelineJob", RecordedJob)
    assert cli.main(["submit", "--pipeline", str(spec), "--project", "p", "--region", "r",
                     "--param", "epochs=3"]) == 0
    assert jobs[0]["parameter_values"] == {"epochs": 3}
    assert jobs[0]["template_path"] == str(spec) and jobs[0]["location"] == "r"
    assert cli.main(["submit", "--pipeline", str(spec), "--project", "p",
                     "--param", "epochs=many"]) == 2
    assert _error_line(capsys) == ("cxr: error: runtime parameter epochs='many' is not a "
                                   "valid int")
    assert cli.main(["submit", "--pipeline", str(spec), "--project", "p",
                     "--param", "learning_rate=1"]) == 2
    assert "unknown runtime parameter 'learning_rate'" in _error_line(capsys)


def test_run_spec_checks_its_inputs_before_running_anything(tmp_path, capsys):
    assert cli.main(["run-spec", "--pipeline", str(tmp_path / "missing.json")]) == 2
    assert _error_line(capsys).startswith("cxr: error: cannot read the pipeline spec")
    spec = tmp_path / "pipeline.json"
    spec.write_text(json.dumps({"pipelineSpec": {"root": {}},
                                "runtimeConfig": {"gcsOutputDirectory": "gs://cxr-b/root"}}))
    assert cli.main(["run-spec", "--pipeline", str(spec), "--param", "epochs"]) == 2
    assert _error_line(capsys) == "cxr: error: --param 'epochs': expected NAME=VALUE"
    assert cli.main(["run-spec", "--pipeline", str(spec), "--stage", "x=gs://cxr-b/d"]) == 2
    assert _error_line(capsys) == "cxr: error: --stage 'x=gs://cxr-b/d': x is not a folder"
