"""`cxr compare` on the tiny end-to-end run (conftest.tiny_pipeline) plus a baseline_cnn run."""
import json
import os

import numpy as np
import pytest

from cxr import cli
from pipeline import compare


@pytest.fixture(scope="module")
def comparison(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("comparison")
    assert cli.main(["compare", *tiny_pipeline.flags, "--models", "mobilenet_v2,baseline_cnn",
                     "--out", str(out), "--bootstrap-resamples", "100"]) == 0
    with open(out / compare.COMPARISON_JSON) as f:
        return out, json.load(f)


def test_every_model_is_measured_on_the_same_test_images(comparison, tiny_pipeline):
    _, result = comparison
    assert set(result["models"]) == {"mobilenet_v2", "baseline_cnn"}
    n_test = int(tiny_pipeline.first.overall_metrics["example_count"])
    assert result["test_images"] == n_test
    for model in result["models"].values():
        assert model["test"]["n_images"] == n_test
        low, high = model["test"]["macro_auc"]["ci95"]
        assert low is None or low <= model["test"]["macro_auc"]["value"] <= high
        cost = model["cost"]
        assert cost["parameters"] > 0 and cost["saved_model_mb"] > 0
        assert cost["latency_ms"]["median"] > 0 and cost["latency_ms"]["images"] > 0
        assert set(model["slices"]) >= {"source", "age_group"}


def test_the_cached_model_is_reused_and_the_recommendation_uses_eval_only(comparison,
                                                                        tiny_pipeline):
    _, result = comparison
    mobilenet = result["models"]["mobilenet_v2"]
    assert mobilenet["trained_model"] == tiny_pipeline.first.model_uri
    assert os.path.dirname(mobilenet["pushed_model_dir"]) == os.path.dirname(
        tiny_pipeline.first.pushed_model_dir)
    choice = result["recommendation"]
    assert choice["model"] in result["models"]
    assert "eval split" in choice["rule"] and "test split played no part" in choice["rule"]
    other = ({"mobilenet_v2", "baseline_cnn"} - {choice["model"]}).pop()
    assert set(result["differences_vs_recommended"]) == {other}


def test_markdown_and_figures_are_written(comparison):
    out, result = comparison
    text = (out / compare.COMPARISON_MD).read_text()
    assert result["command"].startswith("cxr compare ") and result["command"] in text
    assert "not for clinical use" in text
    for name in result["models"]:
        for figure in (f"confusion_{name}.png", f"roc_{name}.png"):
            assert os.path.getsize(out / figure) > 1000 and f"({figure})" in text
    assert "## Test split by source" in text and "## Test split by age group" in text


def test_compare_refuses_bad_model_lists(capsys):
    assert cli.main(["compare", "--data-dir", ".", "--models", "mobilenet_v2"]) == 2
    assert "two or more different candidates" in capsys.readouterr().err
    assert cli.main(["compare", "--data-dir", ".", "--models", "mobilenet_v2,vgg16"]) == 2
    assert "got mobilenet_v2, vgg16" in capsys.readouterr().err


@pytest.mark.parametrize("variant, message", [
    ("Big=--epochs 3", "give NAME=FLAGS"),
    ("big=--epochs three", "argument --epochs: invalid int value: 'three'"),
    ("big=--data-dir elsewhere", "data_dir must be the same for every candidate"),
])
def test_compare_refuses_bad_variants_in_one_line(capsys, variant, message):
    assert cli.main(["compare", "--data-dir", ".", "--models", "mobilenet_v2",
                     "--variant", variant]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_variants_are_compared_on_the_eval_split_only(comparison, tiny_pipeline,
                                                      tmp_path_factory):
    """Variants named like the models are those pipelines: --no-run reads their last runs."""
    out = tmp_path_factory.mktemp("ablation")
    assert cli.main(["compare", *tiny_pipeline.flags, "--eval-only", "--no-run",
                     "--bootstrap-resamples", "100", "--out", str(out),
                     "--variant", "mobilenet_v2=--model mobilenet_v2",
                     "--variant", "baseline_cnn=--model baseline_cnn"]) == 0
    result = json.loads((out / compare.COMPARISON_JSON).read_text())
    assert result["eval_only"] and "test_images" not in result
    _, full = comparison
    for name, model in result["models"].items():
        assert "test" not in model and model["eval"] == full["models"][name]["eval"]
        assert model["settings"]["model"] == name
        assert model["eval_slices"]["age_group"]
    text = (out / compare.COMPARISON_MD).read_text()
    assert "## Eval split (where choices are made)" in text and "Test split" not in text


def _result(name, rows, probabilities):
    return compare.ModelResult(name, None, None, {}, list(rows), np.asarray(probabilities),
                               {}, {})


def test_predictions_are_paired_by_image_not_by_row_order():
    rows = [{"image_sha256": f"{i:064x}", "label": "Normal", "patient_id": f"p{i}"}
            for i in range(5)]
    probabilities = np.eye(3)[[0, 1, 2, 0, 1]]
    order = [3, 0, 4, 1, 2]
    first = _result("a", rows, probabilities)
    shuffled = _result("b", [rows[i] for i in order], probabilities[order])
    compare.align_test_predictions([first, shuffled])
    assert shuffled.test_rows == rows
    np.testing.assert_array_equal(shuffled.test_probabilities, probabilities)


def test_different_test_images_stop_the_comparison():
    rows = [{"image_sha256": f"{i:064x}"} for i in range(4)]
    other = rows[:3] + [{"image_sha256": "f" * 64}]
    with pytest.raises(RuntimeError, match=r"b was tested on other images than a \(1 not in "):
        compare.align_test_predictions([_result("a", rows, np.ones((4, 3))),
                                        _result("b", other, np.ones((4, 3)))])
    unidentified = [{"image_sha256": "unknown"} for _ in range(4)]
    with pytest.raises(RuntimeError, match="does not identify its test images"):
        compare.align_test_predictions([_result("a", unidentified, np.ones((4, 3))),
                                        _result("b", rows, np.ones((4, 3)))])


def test_no_run_needs_an_existing_run(tiny_pipeline, tmp_path, capsys):
    assert cli.main(["compare", *tiny_pipeline.flags, "--no-run", "--out", str(tmp_path),
                     "--variant", "never-ran=--epochs 3", "--models", "mobilenet_v2"]) == 1
    assert "no run of never-ran (pipeline cxr-never-ran)" in capsys.readouterr().err
