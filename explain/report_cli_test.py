"""`cxr gradcam` on image files with a saved model in the Pusher's layout."""
import glob
import json
import os

import pytest

from conftest import SAMPLE_DIR
from cxr import cli

IMAGES = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:2]


@pytest.fixture(scope="module")
def serving_base(tmp_path_factory, trained_baseline):
    """SERVING_DIR/<model_name> with version 1 (the real Trainer adds signatures)."""
    base = tmp_path_factory.mktemp("serving") / "cxr_classifier"
    trained_baseline.save(str(base / "1"), save_format="tf", save_traces=False)
    return str(base)


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_gradcam_writes_a_report_for_unlabelled_images(tmp_path, capsys, serving_base):
    out = tmp_path / "report"
    assert cli.main(["gradcam", *IMAGES, "--model", serving_base, "--out", str(out),
                     "--steps", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[:2]] == [os.path.basename(p) for p in IMAGES]
    assert "deletion AUC" in printed[0] and printed[-1].startswith(f"Report: {out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["context"]["model"] == os.path.join(serving_base, "1")
    assert [r["true_label"] for r in summary["images"]] == [None, None]
    assert all((out / r["overlay"]).is_file() for r in summary["images"])
    assert (out / "report.html").is_file()


def test_gradcam_user_errors_are_one_line(tmp_path, capsys, serving_base):
    out = str(tmp_path / "out")
    assert cli.main(["gradcam", str(tmp_path / "nope.jpg"), "--model", serving_base,
                     "--out", out]) == 2
    assert _error_line(capsys) == f"cxr: error: image not found: {tmp_path / 'nope.jpg'}"
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    assert cli.main(["gradcam", str(not_image), "--model", serving_base, "--out", out]) == 2
    assert _error_line(capsys) == (f"cxr: error: {not_image}: not an image: content is text, "
                                   "not a JPEG, PNG or DICOM image")
    assert cli.main(["gradcam", IMAGES[0], "--model", str(tmp_path), "--out", out]) == 2
    assert _error_line(capsys).startswith(f"cxr: error: no SavedModel in {tmp_path}")
    assert cli.main(["gradcam", IMAGES[0], "--model", serving_base, "--out", out,
                     "--alpha", "2"]) == 2
    assert "overlay alpha must be between 0 and 1" in _error_line(capsys)
    assert cli.main(["gradcam", IMAGES[0], "--model", serving_base, "--out", out,
                     "--target-layer", "nope"]) == 2
    assert "no layer named 'nope'" in _error_line(capsys)
