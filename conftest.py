"""Shared test fixtures: small real data sets cut from the embedded sample."""
import csv
import os
import shutil
from typing import Any, Dict, NamedTuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(REPO_ROOT, "data", "sample")


def sample_rows():
    with open(os.path.join(SAMPLE_DIR, "manifest.csv"), newline="") as f:
        return list(csv.DictReader(f))


def make_subset(dest: str, per_class: int, relabel: Dict[str, str] = None) -> str:
    """Copy the first `per_class` sample images of each class, with their manifest rows."""
    rows, taken = [], {}
    for row in sample_rows():
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            rows.append(dict(row))
    os.makedirs(os.path.join(dest, "images"), exist_ok=True)
    for row in rows:
        shutil.copy(os.path.join(SAMPLE_DIR, row["file"]), os.path.join(dest, row["file"]))
        row["label"] = (relabel or {}).get(row["file"], row["label"])
    with open(os.path.join(dest, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest


@pytest.fixture
def sample_dir() -> str:
    return SAMPLE_DIR


class PipelineRuns(NamedTuple):
    first: Any   # pipeline.summary.RunSummary of the first run
    second: Any  # ... of the same command run again
    config: Any  # pipeline.config.PipelineConfig
    data_dir: str
    flags: list  # the `cxr run` flags other than --model, for `cxr compare` to reuse


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> PipelineRuns:
    """`cxr run` twice on 24 sample images (MobileNetV2, 64 px, one step per phase).

    Shared by every test that needs real pipeline outputs (a pushed model, a TFMA result),
    so the suite pays for the pipeline once.
    """
    from cxr import cli
    from pipeline import summary
    from pipeline.config import PipelineConfig

    root = tmp_path_factory.mktemp("tiny_pipeline")
    data_dir = make_subset(str(root / "data"), per_class=8)
    flags = ["--data-dir", data_dir, "--output-dir", str(root / "out"),
             "--epochs", "2", "--train-steps", "1", "--image-size", "64", "--batch-size", "4",
             "--min-covid-recall", "0", "--min-macro-auc", "0"]
    # Named as `cxr compare` names its mobilenet_v2 run, so that compare's test reuses it.
    args = ["run", *flags, "--model", "mobilenet_v2", "--pipeline-name", "cxr-mobilenet_v2",
            "--serving-model-name", "cxr_mobilenet_v2"]
    config = PipelineConfig(data_dir=data_dir, output_dir=str(root / "out"), image_size=64,
                            pipeline_name="cxr-mobilenet_v2",
                            serving_model_name="cxr_mobilenet_v2")
    assert cli.main(args) == 0
    first = summary.summarize(config)
    assert cli.main(args) == 0
    return PipelineRuns(first, summary.summarize(config), config, data_dir, flags)


@pytest.fixture(scope="session")
def _emulated_gcs():
    from pipeline.gcs_emulator import EmulatedGcs
    with EmulatedGcs() as gcs:
        gcs.create_bucket("cxr-test")
        yield gcs


@pytest.fixture
def gcs_dir(_emulated_gcs, monkeypatch, request) -> str:
    """A gs:// folder of its own on an emulated Cloud Storage (pipeline/gcs_emulator.py):
    during the test, this process's tf.io.gfile and Beam read and write it as on Vertex AI."""
    for name, value in _emulated_gcs.environment().items():
        monkeypatch.setenv(name, value)
    return f"gs://cxr-test/{request.node.name}"


def upload(local_dir: str, uri: str) -> str:
    """Copies a local folder to gs:// (or anywhere tf.io.gfile writes); returns uri."""
    from pipeline.spec_runner import copy_tree
    copy_tree(local_dir, uri)
    return uri
