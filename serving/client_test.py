"""The gRPC client against `cxr serve`'s PredictionService over a real loopback channel."""
import gc
import glob
import os
import socket
import time
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE_DIR
from models import features
from serving import client, server

MODEL_NAME = "cxr_mobilenet_v2"  # conftest.tiny_pipeline serves it under this name


def _sample_paths(count: int):
    return sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:count]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((server.LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(pushed_model_base):
    running = server.start_server(pushed_model_base, port=0)
    yield running.servable, f"{server.LOOPBACK}:{running.grpc_port}"
    running.stop()


def test_model_name_defaults_to_the_folder_name_and_newest_version_is_served(
        served, tiny_pipeline):
    service, _ = served
    assert service.model_name == MODEL_NAME
    # The pipeline ran twice and pushed twice (docs/running.md); the second push is the newest.
    assert service.version_dir == tiny_pipeline.second.pushed_model_dir
    assert service.version > int(os.path.basename(tiny_pipeline.first.pushed_model_dir))


def test_batched_predictions_match_the_savedmodel_in_process(served):
    service, target = served
    paths = _sample_paths(5)
    with client.PredictionClient(target, MODEL_NAME, batch_size=2) as grpc_client:
        predictions = grpc_client.predict_files(paths)  # three requests: 2 + 2 + 1
        single = grpc_client.predict(client.read_images(paths[4:]))
    model = tf.saved_model.load(service.version_dir)
    expected = model.signatures[features.SERVING_SIGNATURE](
        **{features.SERVING_INPUT: tf.constant(client.read_images(paths))})
    expected_probabilities = expected[features.PROBABILITIES_OUTPUT].numpy()
    served_probabilities = np.array([[p.probabilities[name] for name in features.CLASS_NAMES]
                                     for p in predictions])
    np.testing.assert_allclose(served_probabilities, expected_probabilities, atol=1e-6)
    assert [p.predicted_class for p in predictions] == [
        features.CLASS_NAMES[i] for i in expected_probabilities.argmax(axis=1)]
    assert list(predictions[0].probabilities) == features.CLASS_NAMES
    assert single == predictions[4:]


def test_metadata_describes_serving_default(served):
    _, target = served
    with client.PredictionClient(target, MODEL_NAME) as grpc_client:
        signature = grpc_client.signature()
    assert signature.inputs[features.SERVING_INPUT].dtype == tf.string.as_datatype_enum
    assert [d.size for d in signature.inputs[features.SERVING_INPUT].tensor_shape.dim] == [-1]
    assert set(signature.outputs) == {features.PROBABILITIES_OUTPUT, features.CLASS_NAMES_OUTPUT,
                                      features.PREDICTED_CLASS_OUTPUT,
                                      features.CHEST_XRAY_SCORE_OUTPUT,
                                      features.IS_CHEST_XRAY_OUTPUT}
    assert signature.outputs[features.IS_CHEST_XRAY_OUTPUT].dtype == tf.bool.as_datatype_enum


def test_wrong_model_name_or_version_is_not_found(served):
    service, target = served
    with client.PredictionClient(target, "chest_model") as grpc_client:
        with pytest.raises(client.ServingError) as error:
            grpc_client.predict_files(_sample_paths(1))
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert error.value.kind == "usage"
    assert str(error.value) == (f"model 'chest_model' not found on {target} (NOT_FOUND: "
                                "Servable not found for request: Latest(chest_model))")
    wrong_version = service.version + 1
    with client.PredictionClient(target, MODEL_NAME, version=wrong_version) as grpc_client:
        with pytest.raises(client.ServingError, match=rf"Specific\({MODEL_NAME}, "
                                                       rf"{wrong_version}\)"):
            grpc_client.signature()


def test_garbage_is_refused_by_the_image_path_before_anything_is_sent(served, tmp_path):
    _, target = served
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    with client.PredictionClient(f"{server.LOOPBACK}:{_free_port()}", MODEL_NAME,
                                 retries=0) as dead:  # nothing listens: nothing may be sent
        with pytest.raises(client.ServingError) as error:
            dead.predict([b"this is not an image"])
        assert str(error.value) == ("cannot classify image 1: not an image: content is text, "
                                    "not a JPEG, PNG or DICOM image")
        assert error.value.kind == "usage"
    with client.PredictionClient(target, MODEL_NAME, batch_size=1) as grpc_client:
        with pytest.raises(client.ServingError, match=f"^cannot classify {notes}: not an image"):
            grpc_client.predict_files(_sample_paths(1) + [str(notes)])
        assert len(grpc_client.predict_files(_sample_paths(1))) == 1


def _raw_predict(target: str, images, timeout: float = 30.0):
    """A raw TF Serving client: the bytes as they are, no image path."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs[features.SERVING_INPUT].CopyFrom(
        tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as ch:
        return prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request,
                                                                             timeout=timeout)


def test_server_names_each_input_the_model_rejects(served):
    _, target = served
    good = client.read_images(_sample_paths(2))
    truncated = good[0][:len(good[0]) // 3]
    with pytest.raises(grpc.RpcError) as error:
        _raw_predict(target, [good[0], b"not an image", good[1], truncated])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    assert details.startswith("image_bytes[1]: Unknown image file format.")
    assert "; image_bytes[3]: " in details and "image_bytes[0]" not in details
    assert "image_bytes[2]" not in details and "\n" not in details
    assert len(_raw_predict(target, good).outputs[features.PROBABILITIES_OUTPUT]
               .tensor_shape.dim) == 2  # still serving


def test_client_names_the_files_the_server_rejected():
    def send(batch):
        raise client.ServingError("request rejected by host (INVALID_ARGUMENT: image_bytes[1]: "
                                  "Unknown image file format.)", kind="usage",
                                  code=grpc.StatusCode.INVALID_ARGUMENT)

    images = client.read_images(_sample_paths(3))
    with pytest.raises(client.ServingError, match=r"^cannot classify b\.jpg: request rejected"):
        client.predict_in_batches(images, ["a.jpg", "b.jpg", "c.jpg"], 8, send)


def test_batch_and_request_size_limits_are_clear_errors(pushed_model_base):
    running = server.start_server(pushed_model_base, port=0, limits=server.Limits(
        max_batch_size=2, max_request_bytes=200_000))
    target = f"{server.LOOPBACK}:{running.grpc_port}"
    try:
        images = client.read_images(_sample_paths(3))
        with pytest.raises(grpc.RpcError) as error:
            _raw_predict(target, images)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == (
            "the request holds 3 inputs, over this server's limit of 2 per request (cxr serve "
            "--max-batch-size); send fewer per request")
        with client.PredictionClient(target, MODEL_NAME, batch_size=2) as grpc_client:
            assert len(grpc_client.predict(images)) == 3  # two requests
            with pytest.raises(client.ServingError) as too_big:
                grpc_client.predict([images[0] + b"\0" * 250_000])
        assert too_big.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "send fewer images per request (--batch-size)" in str(too_big.value)
    finally:
        running.stop()


def test_model_status_reports_the_loaded_version(served):
    service, target = served
    with client.PredictionClient(target, MODEL_NAME) as grpc_client:
        assert grpc_client.status() == {service.version: "AVAILABLE"}
    with client.PredictionClient(target, MODEL_NAME, version=service.version + 1) as other:
        with pytest.raises(client.ServingError, match="Could not find version"):
            other.status()


def test_missing_file_fails_before_any_request(tmp_path):
    missing = tmp_path / "missing.jpg"
    with client.PredictionClient(f"{server.LOOPBACK}:{_free_port()}", MODEL_NAME,
                                 retries=0) as grpc_client:
        with pytest.raises(client.ServingError, match=f"^image file not found: {missing}$"):
            grpc_client.predict_files([str(missing)])


def test_dead_port_is_unavailable_after_the_configured_retries():
    target = f"{server.LOOPBACK}:{_free_port()}"
    started = time.monotonic()
    with client.PredictionClient(target, MODEL_NAME, retries=2, backoff_seconds=0.2,
                                 timeout_seconds=5) as grpc_client:
        with pytest.raises(client.ServingError) as error:
            grpc_client.predict_files(_sample_paths(1))
    elapsed = time.monotonic() - started
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert error.value.kind == "server"
    assert str(error.value).startswith(f"{target} UNAVAILABLE after 3 attempt(s)")
    assert 0.2 + 0.4 <= elapsed < 5  # both backoffs waited, no deadline ran out


def test_invalid_request_is_rejected_but_client_errors_are_not_retried(served):
    _, target = served
    started = time.monotonic()
    with client.PredictionClient(target, "chest_model", retries=3,
                                 backoff_seconds=1.0) as grpc_client:
        with pytest.raises(client.ServingError):
            grpc_client.signature()
    assert time.monotonic() - started < 1.0


def test_each_version_is_warmed_up_before_serving(served, tmp_path):
    """TF Serving's warm-up file is replayed (the Pusher writes one into every version);
    without one, serving_default gets one image; a damaged one refuses the version."""
    import shutil

    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from serving import warmup

    service, _ = served
    assert service.warm_up_requests == len(warmup.BATCH_SIZES)
    copy = tmp_path / MODEL_NAME / "1"
    shutil.copytree(service.version_dir, copy)
    os.remove(copy / warmup.WARMUP_PATH)
    assert server.Servable(str(tmp_path / MODEL_NAME), MODEL_NAME).warm_up_requests == 1
    with tf.io.TFRecordWriter(str(copy / warmup.WARMUP_PATH)) as writer:
        for batch in ([1], [1, 2], [1, 2, 3]):
            request = predict_pb2.PredictRequest()
            request.inputs[features.SERVING_INPUT].CopyFrom(tf.make_tensor_proto(
                client.read_images(_sample_paths(len(batch))), dtype=tf.string))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    assert server.Servable(str(tmp_path / MODEL_NAME), MODEL_NAME).warm_up_requests == 3
    (copy / warmup.WARMUP_PATH).write_bytes(b"not a TFRecord file")
    with pytest.raises(server.ModelDirError, match="cannot read the warm-up file"):
        server.Servable(str(tmp_path / MODEL_NAME), MODEL_NAME)


def test_describe_leads_with_the_gate_verdict():
    probabilities = {"COVID-19": 0.5071, "Pneumonia": 0.2301, "Normal": 0.2628}
    assert client.describe(client.Prediction("COVID-19", probabilities)) == \
        "COVID-19 (COVID-19 0.507, Pneumonia 0.230, Normal 0.263)"
    assert client.describe(client.Prediction("COVID-19", probabilities, 0.4123, True)) == \
        "COVID-19 (COVID-19 0.507, Pneumonia 0.230, Normal 0.263); chest X-ray score 0.412"
    assert client.describe(client.Prediction("COVID-19", probabilities, 0.0, False)) == (
        "not a frontal chest X-ray (chest X-ray score 0.000); as a chest X-ray it would be "
        "COVID-19 (COVID-19 0.507, Pneumonia 0.230, Normal 0.263)")


class _CountingCalls:
    """A served signature function that counts its calls (the real function runs)."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, **inputs):
        self.calls += 1
        return self.function(**inputs)

    def __getattr__(self, name):
        return getattr(self.function, name)


def _lists_left_by_failed_tensorflow_calls() -> int:
    """TensorFlow 2.16's Python binding leaves a one-item list holding NULL behind for each
    call that fails, for as long as the process lives."""
    gc.collect()
    return sum(1 for o in gc.get_objects()
               if type(o) is list and len(o) == 1 and repr(o) == "[<NULL>]")


def test_undecodable_inputs_are_refused_before_the_model_runs(served, monkeypatch):
    """A long-running server must not let the model find bad inputs: each failing TensorFlow
    call keeps memory for good (counted here), and the server ran each refused input twice."""
    servable, target = served
    signatures = {name: _CountingCalls(function)
                  for name, function in servable._model.signatures.items()}
    monkeypatch.setattr(servable, "_model", types.SimpleNamespace(signatures=signatures))
    serve = signatures[features.SERVING_SIGNATURE]
    good = client.read_images(_sample_paths(2))
    bad = [b"not an image", good[0][:len(good[0]) // 3], b"\x89PNG\r\n\x1a\n" + b"\0" * 64]

    left_before = _lists_left_by_failed_tensorflow_calls()
    for _ in range(10):
        with pytest.raises(grpc.RpcError) as error:
            _raw_predict(target, [good[0], bad[0], good[1], bad[1], bad[2]])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == (
            "image_bytes[1]: Unknown image file format. One of JPEG, PNG, GIF, BMP required.; "
            "image_bytes[3]: jpeg::Uncompress failed. Invalid JPEG data or crop window.; "
            "image_bytes[4]: Invalid PNG. Failed to initialize decoder.")
    assert serve.calls == 0
    assert _lists_left_by_failed_tensorflow_calls() - left_before < 5

    assert len(_raw_predict(target, good).outputs[features.PROBABILITIES_OUTPUT]
               .tensor_shape.dim) == 2
    assert serve.calls == 1  # the count sees the model's calls
    for _ in range(10):  # and the probe sees failing calls
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_image(bad[0])
    assert _lists_left_by_failed_tensorflow_calls() - left_before >= 10
