"""`cxr serve`, `cxr predict` and `cxr export` end to end, as a user runs them."""
import glob
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, SAMPLE_DIR
from cxr import cli
from models import features
from serving import allocator, client, export

MODEL_NAME = "cxr_mobilenet_v2"  # conftest.tiny_pipeline serves it under this name
STARTUP_SECONDS = 180


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_log(tmp_path_factory):
    return tmp_path_factory.mktemp("serve") / "stderr.log"


@pytest.fixture(scope="module")
def serve_process(pushed_model_base, serve_log):
    """`cxr serve` in its own process, as a developer starts it."""
    port, rest_port = _free_port(), _free_port()
    environment = {name: value for name, value in os.environ.items()
                   if name not in (allocator.ENV_VARIABLE, "GLIBC_TUNABLES")}
    with open(serve_log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "cxr.cli", "serve", "--model-dir", pushed_model_base,
             "--port", str(port), "--rest-port", str(rest_port)], cwd=REPO_ROOT,
            env=environment, stdout=subprocess.PIPE, stderr=stderr, text=True,
            # As from a terminal: a test run started in the background inherits an ignored
            # SIGINT, and Python then installs no Ctrl-C handler in the child.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # The banner is printed once the model is loaded and the port is bound.
    ready, _, _ = select.select([process.stdout], [], [], STARTUP_SECONDS)
    banner = process.stdout.readline() if ready else "no banner"
    assert banner.startswith(f"Serving model '{MODEL_NAME}' version "), banner
    assert f"127.0.0.1:{rest_port} (REST)" in banner, banner
    yield process, f"127.0.0.1:{port}", banner, f"http://127.0.0.1:{rest_port}"
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_then_predict_prints_class_and_probabilities(serve_process, capsys):
    _, target, banner, rest_url = serve_process
    assert "development stand-in" in banner
    images = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:3]
    assert cli.main(["predict", "--server", target, "--model-name", MODEL_NAME, "--json",
                     *images]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == images
    for result in results:
        assert list(result["probabilities"]) == features.CLASS_NAMES
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["predicted_class"] == max(result["probabilities"],
                                                key=result["probabilities"].get)
    assert cli.main(["predict", "--server", target, "--model-name", MODEL_NAME,
                     "--batch-size", "2", *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    first = results[0]
    assert isinstance(first["chest_xray_score"], float)
    assert isinstance(first["is_chest_xray"], bool)
    assert lines[0] == f"{images[0]}: " + client.describe(client.Prediction(
        first["predicted_class"], first["probabilities"], first["chest_xray_score"],
        first["is_chest_xray"]))
    assert len(lines) == 3
    # The same over TF Serving's REST API, from the same process.
    assert cli.main(["predict", "--rest", rest_url, "--model-name", MODEL_NAME, "--json",
                     *images]) == 0
    over_rest = json.loads(capsys.readouterr().out)
    assert [r["predicted_class"] for r in over_rest] == [r["predicted_class"] for r in results]
    for a, b in zip(over_rest, results):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_predict_errors_are_one_line(serve_process, tmp_path, capsys):
    _, target, _, _ = serve_process
    image = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    assert cli.main(["predict", "--server", target, "--model-name", "other", image]) == 2
    assert "NOT_FOUND: Servable not found for request: Latest(other)" in _error_line(capsys)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00" * 64)
    assert cli.main(["predict", "--server", target, "--model-name", MODEL_NAME,
                     str(garbage)]) == 2
    assert _error_line(capsys) == (f"cxr: error: cannot classify {garbage}: not an image: "
                                   "content is text, not a JPEG, PNG or DICOM image")
    assert cli.main(["predict", "--server", target, "--model-name", MODEL_NAME,
                     str(tmp_path / "gone.jpg")]) == 2
    assert _error_line(capsys) == f"cxr: error: image file not found: {tmp_path / 'gone.jpg'}"
    dead = f"127.0.0.1:{_free_port()}"
    assert cli.main(["predict", "--server", dead, "--model-name", MODEL_NAME, "--retries", "1",
                     image]) == 1
    assert _error_line(capsys).startswith(f"cxr: predict failed: {dead} UNAVAILABLE after 2 "
                                          "attempt(s)")


def test_serve_logs_the_malloc_arenas_it_set(serve_process, serve_log):
    lines = serve_log.read_text().splitlines()
    arenas = allocator.DEFAULT_MALLOC_ARENAS
    expected = f"malloc arenas: at most {arenas} (glibc mallopt M_ARENA_MAX)"
    if allocator._glibc() is None:
        expected = f"malloc arenas: not limited to {arenas}, this C library is not glibc"
    assert any(line.startswith(expected) for line in lines), lines


def test_serve_stops_cleanly_on_ctrl_c(serve_process):
    process, _, _, _ = serve_process
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0


def test_serve_rejects_a_version_folder(tiny_pipeline, capsys):
    assert cli.main(["serve", "--model-dir", tiny_pipeline.first.pushed_model_dir,
                     "--malloc-arenas", "0"]) == 2  # 0: the test process keeps glibc's arenas
    assert "is a single version; point at the folder that holds" in _error_line(capsys)


def test_export_command_writes_model_and_parity_report(tiny_pipeline, tmp_path, capsys):
    """The real pushed MobileNetV2 to ONNX, checked on the pipeline's own test split."""
    examples = max(glob.glob(os.path.join(tiny_pipeline.config.pipeline_root,
                                          "ImageExampleGen", "examples", "*")),
                   key=os.path.getmtime)
    output = str(tmp_path / "cxr.onnx")
    started = time.monotonic()
    assert cli.main(["export", "--model-dir", tiny_pipeline.first.pushed_model_dir,
                     "--format", "onnx", "--output", output, "--examples", examples]) == 0
    print(f"onnx export of the pushed model: {time.monotonic() - started:.0f} s")
    out = capsys.readouterr().out
    with open(export.parity_report_path(output)) as f:
        report = json.load(f)
    assert report["passed"] and report["top_class_agreement"] == 1.0
    assert report["images"] == len(export.split_images(examples, "test"))
    assert f"max |probability difference| {report['max_abs_difference']:.2e}" in out
    assert os.path.getsize(output) > 1_000_000  # MobileNetV2's weights are in it


def test_export_without_examples_is_a_usage_error(tiny_pipeline, tmp_path, capsys):
    assert cli.main(["export", "--model-dir", tiny_pipeline.first.pushed_model_dir,
                     "--format", "tflite", "--output", str(tmp_path / "m.tflite"),
                     "--examples", str(tmp_path)]) == 2
    assert _error_line(capsys).startswith("cxr: error: no Split-test/*.gz records under")
