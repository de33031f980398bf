"""End to end: `cxr run` against the plain Keras script, each in a fresh process.

Both are timed as the user would see them (process start to exit, imports included). While
the pipeline runs, its process tree's RSS is sampled; ML Metadata's execution timestamps
then give each component's wall time and the peak RSS seen while it ran.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from bench.measure import REPO_ROOT, RssSampler
from models import trainer


# The wall-time ratio goal is set at this many epochs of the Trainer's default model, image
# size and batch. Only that job is assessed: the pipeline's costs around training are fixed,
# so more epochs would lower the ratio without the pipeline getting any faster.
GOAL_EPOCHS = 10
GOAL_JOB = {"model": trainer.DEFAULTS["model"], "epochs": GOAL_EPOCHS,
            "image_size": trainer.DEFAULTS["image_size"],
            "batch_size": trainer.DEFAULTS["batch_size"]}


@dataclasses.dataclass
class Settings:
    """The fixed job both sides do; flags of `python -m bench` set them. The defaults are
    the ratio goal's job (GOAL_JOB): the Trainer's default model, image size and batch
    (models/trainer.py) at GOAL_EPOCHS epochs."""
    data_dir: str
    model: str = GOAL_JOB["model"]
    epochs: int = GOAL_JOB["epochs"]
    image_size: int = GOAL_JOB["image_size"]
    batch_size: int = GOAL_JOB["batch_size"]
    split: str = "70,15,15"

    @property
    def is_goal_job(self) -> bool:
        return all(getattr(self, key) == value for key, value in GOAL_JOB.items())


class BenchError(RuntimeError):
    """A benchmarked command failed; the message carries its last output lines."""


def _environment() -> Dict[str, str]:
    """This checkout first on the path, Keras 2, quiet TensorFlow."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["TF_USE_LEGACY_KERAS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _run_timed(command: List[str], log_path: str) -> Dict[str, object]:
    """Run a command with its RSS sampled; wall time, peak RSS and the samples."""
    with open(log_path, "w") as log:
        start = time.time()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=_environment(), cwd=REPO_ROOT)
        with RssSampler(process.pid) as sampler:
            code = process.wait()
        end = time.time()
    if code != 0:
        with open(log_path) as log:
            tail = " | ".join(line.strip() for line in log.readlines()[-3:])
        raise BenchError(f"{' '.join(command[:4])} ... exited with status {code}: {tail}")
    return {"start": start, "end": end, "wall_seconds": end - start, "sampler": sampler}


def pipeline_command(settings: Settings, output_dir: str) -> List[str]:
    """`cxr run` with the settings; blessing floors at 0 so the Pusher always pushes."""
    return [sys.executable, "-m", "cxr.cli", "run", "--data-dir", settings.data_dir,
            "--output-dir", output_dir, "--model", settings.model,
            "--epochs", str(settings.epochs), "--image-size", str(settings.image_size),
            "--batch-size", str(settings.batch_size), "--split", settings.split,
            "--min-covid-recall", "0", "--min-macro-auc", "0"]


def plain_command(settings: Settings, work_dir: str) -> List[str]:
    return [sys.executable, "-m", "bench.plain_keras", "--data-dir", settings.data_dir,
            "--work-dir", work_dir, "--model", settings.model,
            "--epochs", str(settings.epochs), "--image-size", str(settings.image_size),
            "--batch-size", str(settings.batch_size), "--split", settings.split]


def component_intervals(metadata_path: str) -> Dict[str, Dict[str, float]]:
    """Component -> {start, end} (epoch seconds) of the latest run, from ML Metadata.

    An execution is registered once its inputs are resolved and updated when its outputs
    are published, so launcher bookkeeping between components is not counted here.
    """
    from ml_metadata import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(
        metadata_path))
    runs = store.get_contexts_by_type("pipeline_run")
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    node_type = store.get_context_type("node").id
    intervals = {}
    for execution in sorted(store.get_executions_by_context(run.id),
                            key=lambda e: e.create_time_since_epoch):
        node = next(c for c in store.get_contexts_by_execution(execution.id)
                    if c.type_id == node_type)
        intervals[node.name.split(".", 1)[1]] = {
            "start": execution.create_time_since_epoch / 1000,
            "end": execution.last_update_time_since_epoch / 1000}
    return intervals


def run_pipeline(settings: Settings, output_dir: str, extra_args: Sequence[str] = (),
                 through: Optional[str] = None) -> Dict[str, object]:
    """`cxr run` timed; per component its wall time, the process tree's peak RSS while it
    ran and the RSS when it started (what earlier components left behind).

    through: run only the nodes up to this one (bench/partial_run.py), same flags."""
    from pipeline.config import PipelineConfig

    command = pipeline_command(settings, output_dir)
    if through:
        command = [sys.executable, "-m", "bench.partial_run", "--through", through] + \
            command[command.index("run") + 1:]
    timed = _run_timed(command + list(extra_args),
                       os.path.join(os.path.dirname(output_dir),
                                    os.path.basename(output_dir) + ".log"))
    sampler = timed["sampler"]
    config = PipelineConfig(data_dir=settings.data_dir, output_dir=output_dir)
    components = {}
    for name, interval in component_intervals(config.metadata_path).items():
        peak = sampler.peak_between(interval["start"], interval["end"])
        at_start = sampler.at(interval["start"])
        components[name] = {"seconds": interval["end"] - interval["start"],
                            "peak_rss_mib": peak / 2**20 if peak else None,
                            "start_rss_mib": at_start / 2**20 if at_start else None}
    accuracy = {} if through else _card_accuracy(config)
    return {"wall_seconds": timed["wall_seconds"], "peak_rss_mib": sampler.peak / 2**20,
            "components": components, **accuracy}


def _card_accuracy(config) -> Dict[str, object]:
    """The run's test accuracy and its 95% patient-bootstrap interval, from the model card."""
    from evaluation import render
    from pipeline import summary

    card_dir = summary.summarize(config).model_card_dir
    if not card_dir:
        return {"test_accuracy": None, "test_accuracy_ci95": None}
    with open(os.path.join(card_dir, render.JSON_FILE), encoding="utf-8") as f:
        accuracy = json.load(f)["test_metrics"]["accuracy"]
    return {"test_accuracy": accuracy["value"], "test_accuracy_ci95": accuracy["ci95"]}


def run_plain(settings: Settings, work_dir: str) -> Dict[str, object]:
    log_path = work_dir + ".log"
    timed = _run_timed(plain_command(settings, work_dir), log_path)
    with open(log_path) as log:
        result = json.loads([line for line in log if line.startswith("{")][-1])
    return {"wall_seconds": timed["wall_seconds"],
            "peak_rss_mib": timed["sampler"].peak / 2**20, **result}


def run(settings: Settings, work_dir: str, repeats: int) -> Dict[str, object]:
    """Alternate pipeline and plain runs, so load changes hit both alike.

    The last pipeline run's output stays (`output_dir`) for the other benchmarks.
    """
    pipeline_runs, plain_runs = [], []
    for index in range(repeats):
        output_dir = os.path.join(work_dir, f"pipeline_{index}")
        plain_dir = os.path.join(work_dir, f"plain_{index}")
        print(f"[e2e {index + 1}/{repeats}] pipeline ...", flush=True)
        pipeline_runs.append(run_pipeline(settings, output_dir))
        print(f"[e2e {index + 1}/{repeats}] pipeline {pipeline_runs[-1]['wall_seconds']:.1f} s;"
              " plain Keras ...", flush=True)
        plain_runs.append(run_plain(settings, plain_dir))
        print(f"[e2e {index + 1}/{repeats}] plain Keras {plain_runs[-1]['wall_seconds']:.1f} s",
              flush=True)
        shutil.rmtree(plain_dir, ignore_errors=True)
        if index < repeats - 1:
            shutil.rmtree(output_dir, ignore_errors=True)
    return {"pipeline_runs": pipeline_runs, "plain_runs": plain_runs,
            "output_dir": output_dir}


def output_uris(metadata_path: str) -> Dict[str, str]:
    """Artifact type name -> URI of the latest run's newest output of that type."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(
        metadata_path))
    run = max(store.get_contexts_by_type("pipeline_run"),
              key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(run.id)
    output_ids = [e.artifact_id for e in store.get_events_by_execution_ids(
        [e.id for e in executions]) if e.type == metadata_store_pb2.Event.OUTPUT]
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    artifacts = sorted(store.get_artifacts_by_id(output_ids), key=lambda a: a.id)
    return {type_names[a.type_id]: a.uri for a in artifacts}
