"""`cxr compare` on the tiny end-to-end run (conftest.tiny_pipeline) plus a baseline_cnn run."""
import json
import os

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
    assert "two or more different names" in capsys.readouterr().err
    assert cli.main(["compare", "--data-dir", ".", "--models", "mobilenet_v2,vgg16"]) == 2
    assert "got 'mobilenet_v2,vgg16'" in capsys.readouterr().err
