"""The compiled Vertex AI spec, executed: `cxr compile` with gs:// paths, then `cxr run-spec
--emulate-gcs`, every task in its own process on an emulated Cloud Storage (tiny data)."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import SAMPLE_DIR, make_subset

BUCKET = "cxr-e2e"


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory):
    from cxr import cli

    root = tmp_path_factory.mktemp("run_spec")
    data_dir = make_subset(str(root / "data"), per_class=8)
    spec = str(root / "pipeline.json")
    assert cli.main([
        "compile", "--output", spec, "--image", "europe-docker.pkg.dev/p/cxr/pipeline:test",
        "--pipeline-name", "cxr-spec", "--data-dir", f"gs://{BUCKET}/data",
        "--pipeline-root", f"gs://{BUCKET}/root", "--serving-dir", f"gs://{BUCKET}/serving",
        "--model", "baseline_cnn", "--epochs", "3", "--train-steps", "1", "--image-size", "64",
        "--batch-size", "4"]) == 0
    out = root / "run-spec"
    result = subprocess.run(
        [sys.executable, "-m", "cxr.cli", "run-spec", "--pipeline", spec, "--emulate-gcs",
         "--stage", f"{data_dir}=gs://{BUCKET}/data", "--output-dir", str(out),
         # Runtime parameters, as `cxr submit --param` sets them on Vertex AI.
         "--param", "epochs=1", "--param", "min_covid_recall=0", "--param", "min_macro_auc=0"],
        capture_output=True, text=True, timeout=3600)
    copies = glob.glob(str(out / "gcs" / "*" / BUCKET))
    return result, copies[0] if copies else None, spec


def test_every_task_of_the_spec_runs_and_the_model_is_pushed(spec_run):
    result, bucket, spec = spec_run
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    with open(spec) as f:
        tasks = set(json.load(f)["pipelineSpec"]["root"]["dag"]["tasks"])
    started = re.findall(r"\] start (\S+)", result.stdout)
    ended = re.findall(r"\] end +(\S+) \(\d+\.\d s\)", result.stdout)
    assert set(started) == set(ended) == tasks and len(started) == len(tasks)
    # Dependency order: each task starts after its producers ended.
    assert started.index("AnomalyGate") < started.index("Transform") < \
        started.index("Trainer") < started.index("Evaluator") < started.index("Pusher")
    assert "model_blessing -> nothing" in result.stdout  # first run: no blessed baseline
    pushed = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"Pushed model: gs://{BUCKET}/serving/cxr_classifier/\d+", pushed)


def test_the_bucket_holds_the_pushed_model_card_report_and_evaluation(spec_run):
    result, bucket, _ = spec_run
    assert bucket, result.stdout[-2000:]
    version = result.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    pushed = os.path.join(bucket, "serving", "cxr_classifier", version)
    for name in ("saved_model.pb", "variables/variables.index",
                 "assets.extra/model_card.json", "assets.extra/model_card.html",
                 "assets.extra/tf_serving_warmup_requests"):
        assert os.path.getsize(os.path.join(pushed, name)) > 0, name
    with open(os.path.join(pushed, "assets.extra", "model_card.json")) as f:
        card = json.load(f)
    assert card["version"] == version
    assert card["pushed_to"] == f"gs://{BUCKET}/serving/cxr_classifier/{version}"
    assert card["training_data"]["data_dir"] == f"gs://{BUCKET}/data"
    # The runtime parameters reached the Trainer and the Evaluator (compiled: 3 and 0.8).
    assert card["model"]["epochs"] == 1
    assert card["blessing_rule"].startswith("COVID-19 recall >= 0.0 and macro ROC-AUC >= 0.0")
    job_root = glob.glob(os.path.join(bucket, "root", "cxr-spec-*"))[0]
    assert glob.glob(os.path.join(job_root, "ModelCardGenerator", "model_card",
                                  "model_card.html"))
    assert glob.glob(os.path.join(job_root, "GradCam", "report", "report.html"))
    assert glob.glob(os.path.join(job_root, "Evaluator", "evaluation", "metrics*"))
    assert glob.glob(os.path.join(job_root, "ImageExampleGen", "examples", "Split-test", "*"))


def test_the_pushed_model_answers_a_prediction_and_its_warmup(spec_run):
    import tensorflow as tf

    from models import features
    from serving import warmup

    result, bucket, _ = spec_run
    version = result.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    pushed = os.path.join(bucket, "serving", "cxr_classifier", version)
    image = next(p for p in sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*")))
                 if p.endswith((".jpeg", ".jpg", ".png")))
    with open(image, "rb") as f:
        outputs = tf.saved_model.load(pushed).signatures[features.SERVING_SIGNATURE](
            **{features.SERVING_INPUT: tf.constant([f.read()])})
    probabilities = outputs[features.PROBABILITIES_OUTPUT].numpy()
    assert probabilities.shape == (1, features.NUM_CLASSES)
    assert abs(probabilities.sum() - 1.0) < 1e-4
    assert warmup.replay(os.path.join(pushed, warmup.WARMUP_PATH), pushed) == len(
        warmup.BATCH_SIZES)


def test_a_failing_task_ends_the_run_with_one_line_naming_it(spec_run, tmp_path):
    _, _, spec = spec_run
    result = subprocess.run(
        [sys.executable, "-m", "cxr.cli", "run-spec", "--pipeline", spec, "--emulate-gcs",
         "--param", f"data_root=gs://{BUCKET}/no-data-here", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # as `cxr` sets it for users
    assert result.returncode == 1, result.stdout[-2000:]
    error = result.stderr.strip().splitlines()
    assert len(error) == 1, error
    assert re.match(r"cxr: run-spec failed: TaskFailed: task ImageExampleGen failed "
                    r"\(executor, exit status 1\): \S*DataError: data directory not found: "
                    rf"gs://{BUCKET}/no-data-here \(log: .+ImageExampleGen\.log\)$",
                    error[0]), error[0]
    assert re.findall(r"\] start (\S+)", result.stdout) == ["ImageExampleGen"]
