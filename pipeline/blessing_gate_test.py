"""The blessing gate: a model below the thresholds, or worse than the last blessed one, is
not blessed, not pushed, and the run says why."""
import dataclasses
import glob
import os

import tensorflow as tf
import tensorflow_model_analysis as tfma
import tensorflow_transform as tft

from components.grad_cam.explain import find_saved_model, load_model
from cxr import cli
from models import calibration, trainer
from pipeline import pipeline, summary


def test_a_model_below_the_thresholds_is_not_pushed_and_the_run_says_why(tiny_pipeline,
                                                                        capsys):
    """The tiny model (one training step per phase) is far from perfect on its test split."""
    flags = list(tiny_pipeline.flags)
    for flag in ("--min-covid-recall", "--min-macro-auc"):
        flags[flags.index(flag) + 1] = "1.0"
    config = dataclasses.replace(tiny_pipeline.config, pipeline_name="cxr-gate",
                                 serving_model_name="cxr_gate", pipeline_root=None,
                                 min_covid_recall=1.0, min_macro_auc=1.0)
    capsys.readouterr()
    assert cli.main(["run", *flags, "--pipeline-name", config.pipeline_name,
                     "--serving-model-name", config.serving_model_name]) == 0
    printed = capsys.readouterr().out
    result = summary.summarize(config)
    assert result.blessed is False and result.pushed_model_dir is None
    assert not os.path.exists(os.path.join(config.serving_dir, config.serving_model_name))
    assert result.blessing_failures
    for reason in result.blessing_failures:
        assert f"  not blessed because {reason}" in printed
        assert reason.startswith(("COVID-19 recall", "macro ROC-AUC"))
        assert reason.endswith("is below 1")
    assert "Model NOT blessed" in printed
    assert "Pushed model: none (only blessed models are pushed)" in printed


def _uniform_copy(model_dir: str, transform_dir: str, out_dir: str) -> str:
    """The same model with a zero head: probabilities 1/3 for every image, ROC-AUC 0.5."""
    model = load_model(model_dir)
    head = calibration.head(model)
    head.kernel.assign(tf.zeros_like(head.kernel))
    head.bias.assign(tf.zeros_like(head.bias))
    model.save(out_dir, save_format="tf", save_traces=False,
               signatures=trainer.export_signatures(model, tft.TFTransformOutput(transform_dir)))
    return out_dir


def test_max_regression_blocks_a_model_worse_than_the_last_blessed_one(tiny_pipeline, tmp_path):
    """The tiny model and its zero-head copy (ROC-AUC exactly 0.5): the worse one is the
    candidate, the better one the last blessed model."""
    trained_dir = find_saved_model(tiny_pipeline.first.model_uri)
    [transform_dir] = glob.glob(os.path.join(tiny_pipeline.config.pipeline_root, "Transform",
                                             "transform_graph", "*"))
    uniform_dir = _uniform_copy(trained_dir, transform_dir, str(tmp_path / "uniform"))
    trained_auc = tiny_pipeline.first.overall_metrics["macro_auc"]
    assert abs(trained_auc - 0.5) > 0.01, "the test needs a model that is not at chance"
    candidate_dir, baseline_dir = ((trained_dir, uniform_dir) if trained_auc < 0.5
                                   else (uniform_dir, trained_dir))
    drop = abs(trained_auc - 0.5)

    def evaluate(max_regression: float) -> str:
        config = dataclasses.replace(tiny_pipeline.config, min_covid_recall=0.0,
                                     min_macro_auc=0.0, max_regression=max_regression)
        eval_config = pipeline.eval_config(config)
        [spec] = eval_config.model_specs
        del eval_config.model_specs[:]
        eval_config.model_specs.add().CopyFrom(spec)
        eval_config.model_specs[0].name = "candidate"
        eval_config.model_specs.add().CopyFrom(spec)
        eval_config.model_specs[1].name = "baseline"
        eval_config.model_specs[1].is_baseline = True
        output = str(tmp_path / f"evaluation-{max_regression}")
        tfma.run_model_analysis(
            eval_shared_model=[
                tfma.default_eval_shared_model(candidate_dir, eval_config=eval_config,
                                               model_name="candidate"),
                tfma.default_eval_shared_model(baseline_dir, eval_config=eval_config,
                                               model_name="baseline")],
            eval_config=eval_config, output_path=output, file_format="tfrecords",
            data_location=os.path.join(tiny_pipeline.first.examples_uri, "Split-test", "*"))
        return output

    strict = summary.blessing_failures(evaluate(0.0))
    assert len(strict) == 1
    assert strict[0] == (f"macro ROC-AUC fell by {drop:.3f} against the last blessed model "
                         "(allowed: 0.000)")
    assert summary.blessing_failures(evaluate(round(drop + 0.01, 3))) == []
