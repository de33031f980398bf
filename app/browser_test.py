"""`cxr app` end to end in headless Chromium (Debian's chromium driven by Playwright).

The app runs as a user starts it, in its own process on a free loopback port, on a copy of the
tiny pipeline's pushed model that carries a model card. The expected classes come from the
same model served by `cxr serve`'s PredictionService in this process.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from app import model_card_test
from conftest import REPO_ROOT, SAMPLE_DIR
from serving import client, server

CHROMIUM = "/usr/bin/chromium"
STARTUP_SECONDS = 180
PREDICTION_TIMEOUT_MS = 120_000
IMAGE = os.path.join(SAMPLE_DIR, "images", "covid19_actualmed_0003.jpg")
MODEL_NAME = "cxr_classifier"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((server.LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_base(tiny_pipeline, tmp_path_factory) -> str:
    """SERVING_DIR/cxr_classifier holding a copy of the newest push, with a model card."""
    version_dir = tiny_pipeline.second.pushed_model_dir
    base = tmp_path_factory.mktemp("app_serving") / MODEL_NAME
    copy = base / os.path.basename(version_dir)
    shutil.copytree(version_dir, copy)
    card = model_card_test.card_data()
    card["version"] = os.path.basename(version_dir)
    model_card_test.write_card(str(copy), card)
    return str(base)


@pytest.fixture(scope="module")
def served(model_base):
    """The same model behind a gRPC PredictionService: the expected answers, and --server."""
    running = server.start_server(model_base, port=0)
    target = f"{server.LOOPBACK}:{running.grpc_port}"
    with client.PredictionClient(target, running.servable.model_name) as grpc_client:
        yield target, grpc_client
    running.stop()


class RunningApp:
    """`cxr app` in a child process whose working, home and temporary folders are empty
    folders of the test, so that anything it writes there can be found."""

    def __init__(self, root, app_args):
        self.folders = [root / "cwd", root / "home", root / "tmp"]
        for folder in self.folders:
            folder.mkdir(parents=True)
        self.url = f"http://{server.LOOPBACK}:{_free_port()}"
        env = dict(os.environ, HOME=str(root / "home"), TMPDIR=str(root / "tmp"),
                   PYTHONPATH=REPO_ROOT)
        self.log = open(root / "app.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cxr.cli", "app", *app_args,
             "--port", self.url.rsplit(":", 1)[1]],
            cwd=root / "cwd", env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                pytest.fail(f"cxr app exited with {self.process.returncode}:\n{self.log.read()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as answer:
                    if answer.read() == b"ok":
                        return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        pytest.fail(f"cxr app did not answer on {self.url} within {STARTUP_SECONDS} s")

    def files_written(self):
        return [os.path.join(folder, name) for top in self.folders
                for folder, _, names in os.walk(top) for name in names]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def start_app(tmp_path):
    apps = []

    def start(*app_args) -> RunningApp:
        app = RunningApp(tmp_path / f"app{len(apps)}", [str(a) for a in app_args])
        apps.append(app)
        app.wait_until_healthy()
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.isfile(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: sudo apt-get install -y chromium (make test does "
                    "it when run as root)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 1700})
    page.set_default_timeout(PREDICTION_TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("This is not a diagnostic device").wait_for()
    return page


def _upload(page, path: str) -> None:
    page.locator('input[type="file"]').set_input_files(path)


def _predicted_class(page) -> str:
    """The class shown, whether or not the gate flagged the image (then in an h5)."""
    heading = page.locator("h4, h5", has_text="Predicted class")
    heading.wait_for()
    return heading.inner_text().split(":", 1)[1].strip()


def _heatmap_width(page, class_name: str) -> int:
    """The natural width of the rendered heatmap of `class_name` (0 if it failed to load)."""
    image = page.locator('[data-testid="stImage"]').filter(
        has_text=f"Grad-CAM for {class_name}:").locator("img")
    image.wait_for()
    page.wait_for_function("img => img.complete", arg=image.element_handle())
    return image.evaluate("img => img.naturalWidth")


def test_upload_shows_prediction_heatmaps_and_model_card(browser, start_app, model_base,
                                                         served, tmp_path):
    _, grpc_client = served
    with open(IMAGE, "rb") as f:
        image_bytes = f.read()
    expected = grpc_client.predict([image_bytes])[0].predicted_class
    app = start_app("--model-dir", os.path.dirname(model_base))
    page = _open(browser, app.url)
    version = os.listdir(model_base)[0]
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text(f"{MODEL_NAME} version {version}").wait_for()
    # Streamlit sends the sidebar element by element: wait for each line, then check it whole.
    for line in ("Accuracy: 0.833 (95% CI 0.608–0.942)",
                 "COVID-19 sensitivity: 0.900 (95% CI 0.620–0.980)"):
        sidebar.get_by_text(line).wait_for()
        assert line in sidebar.inner_text()

    _upload(page, IMAGE)
    assert _predicted_class(page) == expected
    assert _heatmap_width(page, expected) > 0
    other = next(name for name in ("Normal", "Pneumonia") if name != expected)
    page.locator('[data-testid="stRadio"]').get_by_text(other, exact=True).click()
    assert _heatmap_width(page, other) > 0
    page.screenshot(path=str(tmp_path / "app.png"))
    assert os.path.getsize(tmp_path / "app.png") > 10_000

    notes = tmp_path / "notes.txt"
    notes.write_text("patient notes, not an image\n")
    _upload(page, str(notes))
    page.locator('[data-testid="stAlert"]').get_by_text(
        "notes.txt: not an image: content is text, not a JPEG, PNG or DICOM image").wait_for()
    assert page.locator("h4", has_text="Predicted class:").count() == 0
    page.screenshot(path=str(tmp_path / "app-error.png"))
    # The app keeps working after a bad upload.
    _upload(page, IMAGE)
    assert _predicted_class(page) == expected

    written = app.files_written()
    assert not [path for path in written if open(path, "rb").read() == image_bytes], written

    # Colour noise is no chest X-ray: the page says so first, the class only for reference.
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)).save(
        noise)
    flagged = grpc_client.predict([noise.read_bytes()])[0]
    assert flagged.is_chest_xray is False
    _upload(page, str(noise))
    page.locator("h4", has_text="Not a frontal chest X-ray").wait_for()
    assert _predicted_class(page) == flagged.predicted_class
    page.screenshot(path=str(tmp_path / "app-not-a-chest-x-ray.png"))


def test_server_mode_predicts_over_grpc_and_says_the_heatmap_is_unavailable(
        browser, start_app, served):
    target, grpc_client = served
    with open(IMAGE, "rb") as f:
        expected = grpc_client.predict([f.read()])[0].predicted_class
    app = start_app("--server", target, "--model-name", MODEL_NAME)
    page = _open(browser, app.url)
    page.get_by_text(f"Predictions from {target}").wait_for()
    _upload(page, IMAGE)
    assert _predicted_class(page) == expected
    page.get_by_text("Grad-CAM heatmap unavailable").wait_for()
    assert page.locator('[data-testid="stImage"]').count() == 1  # the upload, no heatmap
