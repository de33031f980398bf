import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx import types
from tfx.types import artifact_utils, standard_artifacts

from components.grad_cam import component, executor
from components.image_example_gen.executor import accepted_to_example
from conftest import make_subset, upload
from explain import gradcam_report
from explain.conftest import last_relu_name
from imaging import ingest
from models import features

BROKEN_PATIENT = "broken"


def _test_split(tmp_path, per_class: int) -> standard_artifacts.Examples:
    """A real ExampleGen-style test split (gzipped tf.Examples) plus one undecodable image."""
    data_dir = make_subset(str(tmp_path / "data"), per_class=per_class)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["test"])
    os.makedirs(tmp_path / "examples" / "Split-test")
    broken = tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"not a jpeg"])),
        features.LABEL_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Normal"])),
        features.PATIENT_ID_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[BROKEN_PATIENT.encode()]))}))
    path = str(tmp_path / "examples" / "Split-test" / "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for checked in ingest.check_data(data_dir, ingest.IngestOptions())[0]:
            accepted = ingest.reload(checked, ingest.IngestOptions().file_checks)
            writer.write(accepted_to_example(accepted).SerializeToString())
        writer.write(broken.SerializeToString())
    return examples


def _model_artifact(tmp_path, model) -> standard_artifacts.Model:
    artifact = standard_artifacts.Model()
    artifact.uri = str(tmp_path / "model")
    model.save(os.path.join(artifact.uri, "Format-Serving"), save_format="tf", save_traces=False)
    return artifact


def test_select_cases_takes_confident_hits_and_every_mistake():
    true_ids = [0, 0, 0, 1, 1, 2]
    probabilities = np.array([[0.6, 0.2, 0.2], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1],
                              [0.2, 0.7, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    assert executor.select_cases(true_ids, probabilities, 1, True) == [1, 2, 3, 4, 5]
    assert executor.select_cases(true_ids, probabilities, 2, False) == [1, 0, 2, 3, 4, 5]


def test_cap_on_mistakes_takes_one_per_class_in_turn_most_confident_first():
    true_ids = [0, 0, 0, 1, 1, 2]
    probabilities = np.array([[0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.1, 0.8, 0.1],
                              [0.2, 0.7, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    assert executor.select_cases(true_ids, probabilities, 1, True, 0) == [2, 0, 1, 3, 4, 5]
    assert executor.select_cases(true_ids, probabilities, 1, True, 3) == [2, 0, 3, 4, 5]
    assert executor.select_cases(true_ids, probabilities, 1, True, 2) == [2, 3, 4, 5]
    assert executor.select_cases(true_ids, probabilities, 1, True, 1) == [2, 3, 5]


def test_component_rejects_bad_parameters():
    model = types.Channel(type=standard_artifacts.Model)
    examples = types.Channel(type=standard_artifacts.Examples)
    with pytest.raises(ValueError, match="overlay alpha must be between 0 and 1"):
        component.GradCam(model=model, examples=examples, overlay_alpha=1.5)
    with pytest.raises(ValueError, match="images per class must be at least 1"):
        component.GradCam(model=model, examples=examples, images_per_class=0)
    with pytest.raises(ValueError, match="max misclassified must be 0"):
        component.GradCam(model=model, examples=examples, max_misclassified=-1)


def test_executor_writes_a_complete_report(tmp_path, trained_baseline):
    examples = _test_split(tmp_path, per_class=3)
    model = _model_artifact(tmp_path, trained_baseline)
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", 1)
    report = component.GradCamReport()
    report.uri = str(tmp_path / "report")
    executor.Executor().Do(
        {executor.MODEL_KEY: [model], executor.EXAMPLES_KEY: [examples],
         executor.BLESSING_KEY: [blessing]},
        {executor.REPORT_KEY: [report]},
        {executor.IMAGES_PER_CLASS_KEY: 1, executor.ALL_MISCLASSIFIED_KEY: True,
         executor.TARGET_LAYER_KEY: "", executor.OVERLAY_ALPHA_KEY: 0.5,
         executor.STEPS_KEY: 4, executor.SPLIT_KEY: "test"})

    with open(os.path.join(report.uri, gradcam_report.SUMMARY_FILE)) as f:
        summary = json.load(f)
    context, images = summary["context"], summary["images"]
    assert context["images in split"] == 9 and context["undecodable images skipped"] == 1
    assert context["blessed"] is True
    assert summary["target_layer"] == last_relu_name(trained_baseline)
    assert summary["image_size"] == 48
    mistakes = [r for r in images if r["correct"] is False]
    assert len(mistakes) == context["misclassified in split"]
    assert context["misclassified explained"] == f"{len(mistakes)} of {len(mistakes)}"
    assert report.get_int_custom_property("misclassified_explained") == len(mistakes)
    for name, figures in summary["classes"].items():
        assert sum(r["correct"] is True for r in images if r["true_label"] == name) <= 1
        assert figures["images"] == sum(r["true_label"] == name for r in images)
    assert report.get_int_custom_property("images") == len(images) > 0
    assert BROKEN_PATIENT not in {r["name"].split("-")[0] for r in images}

    for record in images:
        assert record["predicted_label"] in features.CLASS_NAMES
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        for key in ("deletion_auc", "insertion_auc", "random_deletion_auc",
                    "random_insertion_auc", "border_mass", "lung_field_mass"):
            assert 0.0 <= record[key] <= 1.0, key
        assert -1.0 <= record["randomization_rank_correlation"] <= 1.0
        with Image.open(os.path.join(report.uri, record["overlay"])) as overlay:
            assert overlay.size == (2 * 224, 224)

    with open(os.path.join(report.uri, gradcam_report.REPORT_FILE), encoding="utf-8") as f:
        page = f.read()
    links = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert {r["overlay"] for r in images} | {f["grid"] for f in summary["classes"].values()} \
        | {gradcam_report.SUMMARY_FILE} <= links
    for link in links:
        assert not os.path.isabs(link) and os.path.isfile(os.path.join(report.uri, link)), link
    for record in images:
        assert record["name"] in page
    assert "not for clinical use" in page


def test_executor_reads_and_writes_cloud_storage(tmp_path, trained_baseline, gcs_dir):
    examples = _test_split(tmp_path, per_class=1)
    examples.uri = upload(examples.uri, f"{gcs_dir}/examples")
    model = standard_artifacts.Model()
    model.uri = f"{gcs_dir}/model"
    trained_baseline.save(f"{model.uri}/Format-Serving", save_format="tf", save_traces=False)
    report = component.GradCamReport()
    report.uri = f"{gcs_dir}/report"
    executor.Executor().Do(
        {executor.MODEL_KEY: [model], executor.EXAMPLES_KEY: [examples]},
        {executor.REPORT_KEY: [report]},
        {executor.IMAGES_PER_CLASS_KEY: 1, executor.ALL_MISCLASSIFIED_KEY: False,
         executor.TARGET_LAYER_KEY: "", executor.OVERLAY_ALPHA_KEY: 0.5,
         executor.STEPS_KEY: 2, executor.SPLIT_KEY: "test"})
    with tf.io.gfile.GFile(os.path.join(report.uri, gradcam_report.SUMMARY_FILE)) as f:
        summary = json.load(f)
    assert summary["context"]["images in split"] == 3
    for record in summary["images"]:
        assert tf.io.gfile.exists(os.path.join(report.uri, record["overlay"]))
    assert tf.io.gfile.exists(os.path.join(report.uri, gradcam_report.REPORT_FILE))
