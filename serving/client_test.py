"""The gRPC client against `cxr serve`'s PredictionService over a real loopback channel."""
import glob
import os
import socket
import time

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
    grpc_server, service, port = server.start_server(pushed_model_base, port=0)
    yield service, f"{server.LOOPBACK}:{port}"
    grpc_server.stop(grace=None).wait()


def test_model_name_defaults_to_the_folder_name_and_newest_version_is_served(
        served, tiny_pipeline):
    service, _ = served
    assert service.model_name == MODEL_NAME
    # The pipeline ran twice and pushed twice (README); the second push is the newest.
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
                                      features.PREDICTED_CLASS_OUTPUT}


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


def test_garbage_image_is_invalid_argument_and_the_server_keeps_serving(served):
    _, target = served
    with client.PredictionClient(target, MODEL_NAME) as grpc_client:
        with pytest.raises(client.ServingError) as error:
            grpc_client.predict([b"this is not an image"])
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "Unknown image file format" in str(error.value)
        assert len(grpc_client.predict_files(_sample_paths(1))) == 1


def test_undecodable_file_is_named(served, tmp_path):
    _, target = served
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    with client.PredictionClient(target, MODEL_NAME, batch_size=1) as grpc_client:
        with pytest.raises(client.ServingError, match=f"cannot classify {notes}: .*"
                                                      "INVALID_ARGUMENT"):
            grpc_client.predict_files(_sample_paths(1) + [str(notes)])


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


def test_newest_version_is_the_highest_number(tmp_path):
    for version in ("9", "10", "3", "not_a_version"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "11").mkdir()  # an unfinished copy without saved_model.pb
    assert server.newest_version(str(tmp_path)) == (10, str(tmp_path / "10"))
    with pytest.raises(server.ModelDirError, match="single version"):
        server.newest_version(str(tmp_path / "10"))
    with pytest.raises(server.ModelDirError, match="no numbered SavedModel versions"):
        server.newest_version(str(tmp_path / "11"))
