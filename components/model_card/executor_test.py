"""The model card of the tiny end-to-end run (conftest.tiny_pipeline): a real TFMA result."""
import json
import os
from collections import Counter

import numpy as np
import pytest

from components.model_card import executor
from evaluation import bias, metrics, predictions, render
from models import assets_extra
from serving import layout


@pytest.fixture(scope="module")
def card(tiny_pipeline):
    card_dir = tiny_pipeline.first.model_card_dir
    with open(os.path.join(card_dir, render.JSON_FILE)) as f:
        return card_dir, json.load(f)


def test_card_files_are_written_and_the_html_embeds_its_figures(card):
    card_dir, _ = card
    for name in (render.MARKDOWN_FILE, render.HTML_FILE, render.PREDICTIONS_FILE) + render.FIGURES:
        assert os.path.getsize(os.path.join(card_dir, name)) > 0, name
    html = open(os.path.join(card_dir, render.HTML_FILE), encoding="utf-8").read()
    assert html.count("data:image/png;base64,") == len(render.FIGURES)
    assert "not for clinical use" in html


def test_metrics_come_from_the_test_predictions_and_agree_with_tfma(card, tiny_pipeline):
    card_dir, content = card
    rows, probabilities = predictions.read_predictions(
        os.path.join(card_dir, render.PREDICTIONS_FILE))
    test = content["test_metrics"]
    assert len(rows) == test["n_images"] == tiny_pipeline.first.overall_metrics["example_count"]
    labels = predictions.label_ids(rows)
    assert test["accuracy"]["value"] == pytest.approx(
        float((probabilities.argmax(axis=1) == labels).mean()))
    assert test["accuracy"]["value"] == pytest.approx(
        tiny_pipeline.first.overall_metrics["sparse_categorical_accuracy"], abs=1e-6)
    assert content["tfma_cross_check"]["accuracy"] == pytest.approx(test["accuracy"]["value"],
                                                                    abs=1e-6)
    assert np.sum(test["confusion_matrix"]) == test["n_images"]
    low, high = test["accuracy"]["ci95"]
    assert low <= test["accuracy"]["value"] <= high


def test_card_states_use_data_bias_slices_and_covid_misses(card):
    card_dir, content = card
    text = open(os.path.join(card_dir, render.MARKDOWN_FILE), encoding="utf-8").read()
    assert "not for clinical use" in text
    assert "false-negative rate" in text
    covid_count = content["test_metrics"]["class_counts"]["COVID-19"]
    assert f"Of {covid_count} COVID-19 test images" in text
    assert set(content["slices"]) == set(metrics.SLICE_KEYS)
    assert "### By source" in text and "### By age group" in text
    assert content["model"]["architecture"] == "mobilenet_v2"
    assert content["model"]["hyperparameters_source"] == "defaults (no tuning)"
    assert content["blessed"] is True
    assert set(content["versions"]) == {"cxr-tfx", "TensorFlow", "TFX", "TFMA"}


def test_pushed_version_carries_the_card_with_its_version(tiny_pipeline):
    pushed = tiny_pipeline.first.pushed_model_dir
    extra = os.path.join(pushed, "assets.extra")
    with open(os.path.join(extra, render.JSON_FILE)) as f:
        content = json.load(f)
    version = os.path.basename(pushed)
    assert content["version"] == version
    assert f"version {version}" in open(os.path.join(extra, render.MARKDOWN_FILE)).read()
    # Per-patient predictions stay with the pipeline's artifacts, out of the serving folder.
    assert not os.path.exists(os.path.join(extra, render.PREDICTIONS_FILE))
    assert sorted(os.listdir(os.path.dirname(pushed))) == sorted(
        v for v in os.listdir(os.path.dirname(pushed)) if not v.startswith("."))


def test_miss_sentence_without_covid_cases():
    report = metrics.report(np.array([1, 2]), np.eye(3)[[1, 2]], ["a", "b"], resamples=10)
    assert render.covid_miss_sentence(report) == (
        "The test split holds no COVID-19 images, so the miss rate is unknown.")


def test_predictions_written_before_examples_had_sex_still_read(tmp_path):
    rows = [{"image_sha256": "ab12", "label": "Normal", "patient_id": "p1", "source": "s",
             "view": "PA", "age_group": "adult", "sex": "F"}]
    predictions.write_predictions(rows, np.array([[0.1, 0.2, 0.7]]), str(tmp_path / "new.csv"))
    header, line = (tmp_path / "new.csv").read_text().splitlines()
    assert header.startswith(",".join(predictions.PREDICTION_KEYS) + ",p_")
    (tmp_path / "old.csv").write_text(
        header.replace(",sex", "") + "\n" + line.replace(",F,", ",") + "\n")
    for name, sex in (("new.csv", "F"), ("old.csv", "unknown")):
        read, probabilities = predictions.read_predictions(str(tmp_path / name))
        assert read == [{**rows[0], "sex": sex}]
        np.testing.assert_allclose(probabilities, [[0.1, 0.2, 0.7]])


def test_every_test_prediction_carries_its_images_digest(card, tiny_pipeline):
    card_dir, _ = card
    rows, _ = predictions.read_predictions(os.path.join(card_dir, render.PREDICTIONS_FILE))
    digests = [row[predictions.IMAGE_DIGEST_KEY] for row in rows]
    assert len(set(digests)) == len(rows)
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


def test_bias_section_counts_the_training_split(card, tiny_pipeline):
    card_dir, content = card
    train_bias = content["training_data"]["train_bias"]
    train_rows = predictions.read_metadata(tiny_pipeline.first.examples_uri, "train")
    assert train_bias["images"] == len(train_rows)
    assert train_bias["class_by_age_group"] == bias.crosstab(
        Counter((r["label"], r["source"], r["age_group"]) for r in train_rows), "age_group")
    assert sum(sum(counts.values()) for counts in train_bias["class_by_source"].values()) == \
        len(train_rows)
    text = open(os.path.join(card_dir, render.MARKDOWN_FILE), encoding="utf-8").read()
    assert "### Shortcuts in the training data" in text
    for warning in train_bias["warnings"]:
        assert f"- {warning}" in text


def test_calibration_is_reported_from_the_trainers_temperature(card, tiny_pipeline):
    card_dir, content = card
    model_dir = layout.find_saved_model(tiny_pipeline.first.model_uri)
    summary = assets_extra.read_training_summary(model_dir)
    block = content["calibration"]
    assert block["temperature"] == summary["temperature"]
    rows, probabilities = predictions.read_predictions(
        os.path.join(card_dir, render.PREDICTIONS_FILE))
    labels = predictions.label_ids(rows)
    assert block["test_after"]["ece"] == pytest.approx(
        metrics.calibration(labels, probabilities)["ece"], abs=1e-5)
    assert sum(b["count"] for b in block["test_before"]["bins"]) == len(rows)
    text = open(os.path.join(card_dir, render.MARKDOWN_FILE), encoding="utf-8").read()
    assert f"{block['test_before']['ece']:.3f} before scaling" in text


def test_parameter_count_is_the_keras_models_recorded_by_the_trainer(card, tiny_pipeline):
    _, content = card
    model_dir = layout.find_saved_model(tiny_pipeline.first.model_uri)
    counted = layout.load_keras_model(model_dir).count_params()
    assert content["model"]["parameters"] == counted > 0
    assert assets_extra.read_training_summary(model_dir)["parameters"] == counted
    # A model trained before the count was recorded: the card loads it and counts.
    assert executor._parameter_count(model_dir, {"temperature": 1.0}) == counted


def test_executor_reads_and_writes_cloud_storage(tiny_pipeline, gcs_dir):
    """Every artifact on gs://, as on Vertex AI: the card must land there, not on local disk."""
    import tensorflow as tf
    from tfx.types import standard_artifacts

    from components.model_card.component import ModelCard
    from conftest import upload

    first = tiny_pipeline.first
    inputs = {}
    for key, artifact_type, uri in (
            (executor.MODEL_KEY, standard_artifacts.Model, first.model_uri),
            (executor.EXAMPLES_KEY, standard_artifacts.Examples, first.examples_uri),
            (executor.EVALUATION_KEY, standard_artifacts.ModelEvaluation, first.evaluation_uri)):
        artifact = artifact_type()
        artifact.uri = upload(uri, f"{gcs_dir}/{key}")
        inputs[key] = [artifact]
    inputs[executor.EXAMPLES_KEY][0].split_names = '["train", "eval", "test"]'
    card = ModelCard()
    card.uri = f"{gcs_dir}/card"
    training = {"model": "mobilenet_v2", "epochs": 2, "image_size": 64, "batch_size": 4,
                "weights": None, "data_dir": "gs://cxr-test/data"}
    executor.Executor().Do(inputs, {executor.MODEL_CARD_KEY: [card]}, {
        executor.MODEL_NAME_KEY: "cxr_classifier", executor.TRAINING_KEY: json.dumps(training),
        executor.BLESSING_RULE_KEY: "any", executor.RESAMPLES_KEY: 50})
    for name in (render.JSON_FILE, render.MARKDOWN_FILE, render.HTML_FILE,
                 render.PREDICTIONS_FILE) + render.FIGURES:
        assert tf.io.gfile.stat(os.path.join(card.uri, name)).length > 0, name
    with tf.io.gfile.GFile(os.path.join(card.uri, render.HTML_FILE)) as f:
        assert f.read().count("data:image/png;base64,") == len(render.FIGURES)
    with tf.io.gfile.GFile(os.path.join(card.uri, render.JSON_FILE)) as f:
        content = json.load(f)
    assert content["training_data"]["data_dir"] == "gs://cxr-test/data"
    assert content["tfma_cross_check"]["examples"] == content["n_test_images"]
