"""`cxr run` killed during the Trainer, then started again with the same command.

One real pipeline in a subprocess (killed), one in this process (resumed): a few minutes.
The data set carries three files that ingestion must quarantine, so the resumed run's
summary shows the quarantine counts too.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

from conftest import REPO_ROOT, make_subset
from cxr import cli
from pipeline import summary
from pipeline.config import PipelineConfig

BEFORE_TRAINER = ("ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
                  "AnomalyGate", "Transform")
STARTUP_LIMIT_SECONDS = 1200


def _data_with_bad_files(dest: str) -> str:
    data_dir = make_subset(dest, per_class=8)
    images = os.path.join(data_dir, "images")
    covid = sorted(name for name in os.listdir(images) if name.startswith("covid"))[0]
    shutil.copy(os.path.join(images, covid), os.path.join(images, "opacity.jpg"))
    open(os.path.join(images, "empty.jpg"), "wb").close()
    with open(os.path.join(data_dir, "manifest.csv"), "a") as f:
        f.write("images/opacity.jpg,Lung_Opacity,,,,,,\n"
                "images/empty.jpg,Normal,,,,,,\n"
                "images/gone.jpg,Normal,,,,,,\n")
    return data_dir


def _kill_when_trainer_starts(args, pipeline_root: str) -> None:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_USE_LEGACY_KERAS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "cxr.cli", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    trainer_dir = os.path.join(pipeline_root, "Trainer")
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    try:
        while not os.path.isdir(trainer_dir):
            if process.poll() is not None:
                raise AssertionError(f"cxr run ended (status {process.returncode}) before the "
                                     f"Trainer started: {process.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "the Trainer did not start in time"
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def test_run_killed_during_trainer_resumes_from_cache(tmp_path, capsys):
    data_dir = _data_with_bad_files(str(tmp_path / "data"))
    out = tmp_path / "out"
    args = ["run", "--data-dir", data_dir, "--output-dir", str(out),
            "--model", "baseline_cnn", "--epochs", "1", "--train-steps", "1",
            "--image-size", "64", "--batch-size", "4",
            "--min-covid-recall", "0", "--min-macro-auc", "0",
            "--ignore-unknown-labels", "--max-quarantined-fraction", "0.2"]
    config = PipelineConfig(data_dir=data_dir, output_dir=str(out))

    _kill_when_trainer_starts(args, config.pipeline_root)
    assert not os.path.isdir(os.path.join(config.serving_dir, config.serving_model_name))
    capsys.readouterr()

    assert cli.main(args) == 0

    states = summary.summarize(config).execution_states
    assert {node: states[node] for node in BEFORE_TRAINER} == {
        node: summary.CACHED for node in BEFORE_TRAINER}
    for node in ("Trainer", "Evaluator", "Pusher"):
        assert states[node] == summary.COMPLETE, (node, states)
    output = capsys.readouterr().out.splitlines()
    assert ("Ingestion: 27 files, 24 accepted (COVID-19 8, Pneumonia 8, Normal 8), 0 of them "
            "converted, 2 quarantined") in output
    for line in ("      1  empty file", "      1  file listed in the manifest does not exist",
                 "Skipped on request (--ignore-unknown-labels): 1 file, not counted as "
                 "quarantined (Lung_Opacity 1)"):
        assert line in output
    assert any(line.startswith("Pushed model: " + config.serving_dir) for line in output)
