"""The whole pipeline on a tiny real data set with LocalDagRunner, run twice (conftest)."""
import glob
import os

import numpy as np
import tensorflow as tf

from conftest import SAMPLE_DIR
from models import features
from pipeline import summary

ALL_NODES = {"ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
             "AnomalyGate", "Transform", "Trainer", "latest_blessed_model_resolver",
             "Evaluator", "GradCam", "ModelCardGenerator", "Pusher"}


def test_every_component_ran(tiny_pipeline):
    first = tiny_pipeline.first
    executed = {node for node, state in first.execution_states.items()
                if state == summary.COMPLETE}
    assert executed >= ALL_NODES - {"latest_blessed_model_resolver"}


def test_model_is_evaluated_per_class_blessed_and_pushed_in_serving_layout(tiny_pipeline):
    first, config = tiny_pipeline.first, tiny_pipeline.config
    assert first.blessed is True
    assert set(first.class_metrics) == set(features.CLASS_NAMES)
    for values in first.class_metrics.values():
        assert {"precision", "recall", "f1_score", "auc"} <= set(values)
    assert first.overall_metrics["example_count"] > 0
    assert 0.0 <= first.overall_metrics["macro_auc"] <= 1.0
    parent, version = os.path.split(first.pushed_model_dir)
    assert parent == os.path.join(config.serving_dir, config.serving_model_name)
    assert version.isdigit()
    assert os.path.isfile(os.path.join(first.pushed_model_dir, "saved_model.pb"))


def test_evaluation_is_sliced_by_label_source_and_age_group(tiny_pipeline):
    import tensorflow_model_analysis as tfma
    first = tiny_pipeline.first
    slice_columns = {key for m in tfma.load_metrics(first.evaluation_uri)
                     for key in (k.column for k in m.slice_key.single_slice_keys)}
    assert slice_columns == {features.LABEL_KEY, features.SOURCE_KEY, features.AGE_GROUP_KEY}


def test_pushed_model_predicts_from_raw_jpeg_and_png_bytes(tiny_pipeline):
    first = tiny_pipeline.first
    model = tf.saved_model.load(first.pushed_model_dir)
    assert {features.SERVING_SIGNATURE, features.TF_EXAMPLE_SIGNATURE,
            features.TRANSFORM_SIGNATURE} <= set(model.signatures)
    jpeg = open(sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0], "rb").read()
    png = tf.io.encode_png(tf.io.decode_jpeg(jpeg)).numpy()
    outputs = model.signatures[features.SERVING_SIGNATURE](
        **{features.SERVING_INPUT: tf.constant([jpeg, png, jpeg])})
    probabilities = outputs[features.PROBABILITIES_OUTPUT].numpy()
    assert probabilities.shape == (3, features.NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities[0], probabilities[2], rtol=1e-6)
    names = outputs[features.CLASS_NAMES_OUTPUT].numpy()
    assert [n.decode() for n in names[0]] == features.CLASS_NAMES
    predicted = [p.decode() for p in outputs[features.PREDICTED_CLASS_OUTPUT].numpy()]
    assert predicted == [features.CLASS_NAMES[i] for i in probabilities.argmax(axis=1)]


def test_tf_example_signature_matches_raw_bytes_signature(tiny_pipeline):
    first = tiny_pipeline.first
    model = tf.saved_model.load(first.pushed_model_dir)
    jpeg = open(sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0], "rb").read()
    example = tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg]))}))
    from_example = model.signatures[features.TF_EXAMPLE_SIGNATURE](
        examples=tf.constant([example.SerializeToString()]))
    from_bytes = model.signatures[features.SERVING_SIGNATURE](
        **{features.SERVING_INPUT: tf.constant([jpeg])})
    np.testing.assert_allclose(from_example[features.PROBABILITIES_OUTPUT],
                               from_bytes[features.PROBABILITIES_OUTPUT], rtol=1e-6)


def test_second_run_reuses_cached_results(tiny_pipeline):
    second = tiny_pipeline.second
    cached = {node for node, state in second.execution_states.items()
              if state == summary.CACHED}
    assert cached >= {"ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
                      "AnomalyGate", "Transform", "Trainer"}


def test_grad_cam_report_explains_the_test_split(tiny_pipeline):
    import json
    config = tiny_pipeline.config
    reports = glob.glob(os.path.join(config.pipeline_root, "GradCam", "report", "*",
                                     "summary.json"))
    assert reports
    report_dir = os.path.dirname(max(reports, key=os.path.getmtime))
    with open(os.path.join(report_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["target_layer"] == "backbone/out_relu"
    assert summary["image_size"] == config.image_size
    assert summary["context"]["blessed"] is True
    assert summary["images"] and set(summary["classes"]) <= set(features.CLASS_NAMES)
    for record in summary["images"]:
        assert os.path.isfile(os.path.join(report_dir, record["overlay"]))
        assert 0.0 <= record["deletion_auc"] <= 1.0 and 0.0 <= record["insertion_auc"] <= 1.0
    assert os.path.isfile(os.path.join(report_dir, "report.html"))


def test_cxr_gradcam_explains_the_pushed_model(tiny_pipeline, tmp_path, capsys):
    import json
    from cxr import cli
    jpeg = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    assert cli.main(["gradcam", jpeg, "--model", tiny_pipeline.first.pushed_model_dir,
                     "--out", str(tmp_path), "--steps", "2"]) == 0
    assert capsys.readouterr().out.startswith(os.path.basename(jpeg))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["target_layer"] == "backbone/out_relu"
    assert len(summary["images"]) == 1 and (tmp_path / summary["images"][0]["overlay"]).is_file()
