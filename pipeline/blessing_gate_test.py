"""The blessing gate: a model below the thresholds, or worse than the last blessed one, is
not blessed, not pushed, and the run says why."""
import dataclasses
import glob
import os
from typing import Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
import tensorflow_transform as tft

from cxr import cli
from models import calibration, features, ood, trainer
from pipeline import pipeline, summary
from serving import layout


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


def _test_features(model: tf.keras.Model, transform_dir: str, examples_uri: str
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Pooled penultimate features and label ids of every test example."""
    transform_output = tft.TFTransformOutput(transform_dir)
    transform = transform_output.transform_features_layer()
    raw_spec = transform_output.raw_feature_spec()

    def images_and_labels(batch):
        transformed = transform(tf.io.parse_example(batch, raw_spec))
        return transformed[features.IMAGE_XF_KEY], transformed[features.LABEL_XF_KEY]

    records = tf.data.TFRecordDataset(glob.glob(os.path.join(examples_uri, "Split-test", "*")),
                                      compression_type="GZIP")
    dataset = records.batch(32).map(images_and_labels)
    labels = np.concatenate([batch_labels.numpy().reshape(-1) for _, batch_labels in dataset])
    return ood.pooled_features(model, dataset)[0], labels


def _copy_with_head(model_dir: str, transform_dir: str, out_dir: str,
                    kernel: np.ndarray, bias: np.ndarray) -> str:
    model = layout.load_keras_model(model_dir)
    head = calibration.head(model)
    head.kernel.assign(kernel.astype(np.float32))
    head.bias.assign(bias.astype(np.float32))
    model.save(out_dir, save_format="tf", save_traces=False,
               signatures=trainer.export_signatures(model, tft.TFTransformOutput(transform_dir)))
    return out_dir


def _uniform_and_oracle_copies(model_dir: str, transform_dir: str, examples_uri: str,
                               out_dir: str) -> Tuple[str, str]:
    """The trained model with two heads of known test ROC-AUC, whatever the tiny training
    reached: a zero head (probability 1/3 for every image: 0.5) and a head fitted by least
    squares on the test split's own features to logits 20 for the true class and 0 for the
    others (fewer images than features, so the fit is exact: 1.0)."""
    model = layout.load_keras_model(model_dir)
    pooled, labels = _test_features(model, transform_dir, examples_uri)
    targets = 20.0 * np.eye(features.NUM_CLASSES)[labels]
    solution = np.linalg.lstsq(np.hstack([pooled, np.ones((len(pooled), 1))]), targets,
                               rcond=None)[0]
    kernel_shape = calibration.head(model).kernel.shape
    uniform = _copy_with_head(model_dir, transform_dir, os.path.join(out_dir, "uniform"),
                              np.zeros(kernel_shape), np.zeros(features.NUM_CLASSES))
    oracle = _copy_with_head(model_dir, transform_dir, os.path.join(out_dir, "oracle"),
                             solution[:-1], solution[-1])
    return uniform, oracle


def test_max_regression_blocks_a_model_worse_than_the_last_blessed_one(tiny_pipeline, tmp_path):
    """A model at chance (ROC-AUC 0.5) is the candidate, a perfect one (1.0) the last blessed
    model: a drop of 0.5."""
    trained_dir = layout.find_saved_model(tiny_pipeline.first.model_uri)
    [transform_dir] = glob.glob(os.path.join(tiny_pipeline.config.pipeline_root, "Transform",
                                             "transform_graph", "*"))
    candidate_dir, baseline_dir = _uniform_and_oracle_copies(
        trained_dir, transform_dir, tiny_pipeline.first.examples_uri, str(tmp_path))
    drop = 0.5

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
