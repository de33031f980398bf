import os

import pytest
import tensorflow as tf

from components.serving_pusher import executor
from models import assets_extra, features
from models.preprocessing import decode_image
from serving import layout, warmup


class _TinyClassifier(tf.Module):
    """The exported model's serving contract (image bytes in, three probabilities out) in a
    few weights: enough for the Pusher to copy, warm up and hand to TF Serving."""

    def __init__(self):
        super().__init__()
        self.weights = tf.Variable([[2.0, -1.0, 0.5]])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                                name=features.SERVING_INPUT)])
    def serve(self, image_bytes):
        brightness = tf.map_fn(lambda b: tf.reduce_mean(decode_image(b, 32)), image_bytes,
                               fn_output_signature=tf.float32)
        return {features.PROBABILITIES_OUTPUT: tf.nn.softmax(brightness[:, None] * self.weights)}


def _saved_model(root) -> str:
    model = root / "model"
    module = _TinyClassifier()
    tf.saved_model.save(module, str(model), signatures={
        features.SERVING_SIGNATURE: module.serve.get_concrete_function()})
    return str(model)


def test_a_reader_sees_no_version_until_it_is_complete(tmp_path, monkeypatch):
    base = tmp_path / "serving" / "cxr"
    base.mkdir(parents=True)
    (base / "100").mkdir()
    seen_during_copy = []
    copy_dir = executor.io_utils.copy_dir

    def watching_copy(source, destination, **kwargs):
        copy_dir(source, destination, **kwargs)
        seen_during_copy.append(sorted(os.listdir(base)))

    monkeypatch.setattr(executor.io_utils, "copy_dir", watching_copy)
    path = executor.publish(_saved_model(tmp_path), str(base), "200")

    assert seen_during_copy == [[".staging-200", "100"]]
    assert path == str(base / "200")
    assert sorted(os.listdir(base)) == ["100", "200"]
    model = tmp_path / "model"
    assert (base / "200" / "saved_model.pb").read_bytes() == (model / "saved_model.pb").read_bytes()
    assert (base / "200" / "variables" / "variables.index").read_bytes() == \
        (model / "variables" / "variables.index").read_bytes()


def test_a_failed_push_leaves_the_serving_versions_as_they_were(tmp_path):
    base = tmp_path / "serving"
    (base / "100").mkdir(parents=True)
    (base / "100" / "saved_model.pb").write_bytes(b"old")
    broken_card = tmp_path / "card-without-json"
    broken_card.mkdir()
    with pytest.raises(tf.errors.NotFoundError):
        executor.publish(_saved_model(tmp_path), str(base), "200", str(broken_card))
    assert sorted(os.listdir(base)) == ["100"]
    assert (base / "100" / "saved_model.pb").read_bytes() == b"old"


def test_every_pushed_version_carries_warmup_requests_that_the_model_answers(tmp_path):
    base = tmp_path / "serving" / "cxr_classifier"
    path = executor.publish(_saved_model(tmp_path), str(base), "300")
    warmup_file = os.path.join(path, warmup.WARMUP_PATH)
    logs = warmup.read(warmup_file)
    assert [len(log.predict_log.request.inputs[features.SERVING_INPUT].string_val)
            for log in logs] == list(warmup.BATCH_SIZES)
    assert {log.predict_log.request.model_spec.name for log in logs} == {"cxr_classifier"}
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {
        features.SERVING_SIGNATURE}
    # Loaded back from the pushed version, the requests answer as TF Serving replays them.
    assert warmup.replay(warmup_file, path) == len(warmup.BATCH_SIZES)


def test_a_model_that_fails_its_warmup_is_not_pushed(tmp_path):
    model = tmp_path / "model"
    module = tf.Module()
    module.serve = tf.function(
        lambda image_bytes: {features.PROBABILITIES_OUTPUT: tf.zeros([1, 2])},
        input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT)])
    tf.saved_model.save(module, str(model), signatures={
        features.SERVING_SIGNATURE: module.serve.get_concrete_function()})
    base = tmp_path / "serving"
    base.mkdir()
    with pytest.raises(warmup.WarmupError, match=r"batch 1 returned probabilities of shape "
                                                 r"\(1, 2\)"):
        executor.publish(str(model), str(base), "400")
    assert os.listdir(base) == []


def test_a_damaged_warmup_file_is_a_one_line_error(tmp_path):
    damaged = tmp_path / warmup.WARMUP_FILE
    damaged.write_bytes(b"not a tfrecord file")
    with pytest.raises(warmup.WarmupError, match="cannot read the warm-up file"):
        warmup.read(str(damaged))


def test_push_to_cloud_storage_writes_the_model_card_and_warmup_with_the_graph_last(
        tmp_path, gcs_dir, tiny_pipeline):
    card = tiny_pipeline.first.model_card_dir
    base = f"{gcs_dir}/serving/cxr_classifier"
    seen_before_graph = []
    copy = tf.io.gfile.copy

    def watching_copy(source, destination, overwrite=False):
        if destination.endswith(layout.SAVED_MODEL_FILE):
            seen_before_graph.extend(tf.io.gfile.listdir(os.path.dirname(destination)))
        copy(source, destination, overwrite)

    try:
        tf.io.gfile.copy = watching_copy
        path = executor.publish(_saved_model(tmp_path), base, "500", card)
    finally:
        tf.io.gfile.copy = copy
    assert path == f"{base}/500"
    assert layout.SAVED_MODEL_FILE not in seen_before_graph  # the graph comes last
    assert "assets.extra/" in seen_before_graph and "variables/" in seen_before_graph
    with tf.io.gfile.GFile(f"{path}/{assets_extra.MODEL_CARD_PATH}") as f:
        assert '"version": "500"' in f.read()
    assert warmup.replay(f"{path}/{warmup.WARMUP_PATH}", path) == len(warmup.BATCH_SIZES)
