"""REST payloads in the format of TF Serving's REST API documentation, and its error paths."""
import base64
import glob
import json
import os
import socket

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE_DIR
from models import features
from serving import client, rest


def test_predict_url_follows_the_rest_api_paths():
    assert (rest.predict_url("http://localhost:8501", "cxr_classifier")
            == "http://localhost:8501/v1/models/cxr_classifier:predict")
    assert (rest.predict_url("http://host:8501/", "cxr_classifier", version=3)
            == "http://host:8501/v1/models/cxr_classifier/versions/3:predict")


def test_request_body_carries_each_image_as_b64_in_row_format():
    body = rest.encode_request([b"\xff\xd8\xff\xe0", b"abc"])
    # Written out by hand: base64 of FF D8 FF E0 and of "abc".
    assert json.loads(json.dumps(body)) == {
        "signature_name": "serving_default",
        "instances": [{"image_bytes": {"b64": "/9j/4A=="}}, {"image_bytes": {"b64": "YWJj"}}],
    }


def test_b64_payload_is_what_the_model_decodes(tiny_pipeline):
    """Decoding the JSON the way TF Serving does gives the model the file's exact bytes."""
    path = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    body = json.loads(json.dumps(rest.encode_request(client.read_images([path]))))
    received = [base64.b64decode(instance[features.SERVING_INPUT]["b64"])
                for instance in body["instances"]]
    model = tf.saved_model.load(tiny_pipeline.first.pushed_model_dir)
    serve = model.signatures[body["signature_name"]]
    from_json = serve(**{features.SERVING_INPUT: tf.constant(received)})
    from_file = serve(**{features.SERVING_INPUT: tf.constant(client.read_images([path]))})
    np.testing.assert_array_equal(from_json[features.PROBABILITIES_OUTPUT],
                                  from_file[features.PROBABILITIES_OUTPUT])


def test_row_format_response_is_parsed_per_image():
    body = {"predictions": [
        {"probabilities": [0.7, 0.2, 0.1], "class_names": ["COVID-19", "Pneumonia", "Normal"],
         "predicted_class": "COVID-19"},
        {"probabilities": [0.1, 0.3, 0.6], "class_names": ["COVID-19", "Pneumonia", "Normal"],
         "predicted_class": "Normal"},
    ]}
    first, second = rest.decode_response(body)
    assert first == client.Prediction("COVID-19",
                                      {"COVID-19": 0.7, "Pneumonia": 0.2, "Normal": 0.1})
    assert second.predicted_class == "Normal"
    assert second.probabilities["Normal"] == pytest.approx(0.6)


def test_unreachable_rest_server_fails_after_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[0]
    rest_client = rest.RestClient(f"http://127.0.0.1:{port}", "cxr_classifier", retries=1,
                                  backoff_seconds=0.01)
    with pytest.raises(client.ServingError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1/"
                                                  r"models/cxr_classifier:predict after 2 "
                                                  r"attempt\(s\): .*refused"):
        rest_client.predict_files([image])


# TF Serving's REST API as `cxr serve --rest-port` answers it, on loopback.

MODEL_NAME = "cxr_mobilenet_v2"  # conftest.tiny_pipeline serves it under this name


@pytest.fixture(scope="module")
def rest_served(pushed_model_base):
    from serving import server

    running = server.start_server(pushed_model_base, port=0, rest_port=0,
                                  limits=server.Limits(max_batch_size=8,
                                                       max_request_bytes=2 ** 20))
    yield running, f"http://{server.LOOPBACK}:{running.rest_port}"
    running.stop()


def _http(method: str, url: str, body=None, raw: bytes = None):
    """(HTTP status, parsed JSON body), whatever the status."""
    import urllib.error
    import urllib.request

    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _sample_images(count: int):
    return client.read_images(sorted(glob.glob(os.path.join(SAMPLE_DIR, "images",
                                                            "*.jpg")))[:count])


def test_rest_predict_matches_grpc_and_the_savedmodel(rest_served):
    running, base = rest_served
    images = _sample_images(3)
    status, body = _http("POST", rest.predict_url(base, MODEL_NAME), rest.encode_request(images))
    assert status == 200 and len(body["predictions"]) == 3
    assert set(body["predictions"][0]) >= {"probabilities", "class_names", "predicted_class"}
    expected = tf.saved_model.load(running.servable.version_dir).signatures[
        features.SERVING_SIGNATURE](**{features.SERVING_INPUT: tf.constant(images)})
    np.testing.assert_allclose([row["probabilities"] for row in body["predictions"]],
                               expected[features.PROBABILITIES_OUTPUT].numpy(), atol=1e-6)
    # The columnar format answers with "outputs", as TF Serving does.
    status, columnar = _http("POST", rest.predict_url(base, MODEL_NAME, running.servable.version),
                             {"inputs": {features.SERVING_INPUT: [
                                 {"b64": base64.b64encode(image).decode()} for image in images]}})
    assert status == 200
    np.testing.assert_allclose(columnar["outputs"]["probabilities"],
                               [row["probabilities"] for row in body["predictions"]], atol=1e-6)
    assert columnar["outputs"]["predicted_class"] == [row["predicted_class"]
                                                      for row in body["predictions"]]


def test_rest_model_status_and_metadata_have_tf_servings_bodies(rest_served):
    running, base = rest_served
    version = running.servable.version
    assert _http("GET", rest.model_url(base, MODEL_NAME)) == (200, {"model_version_status": [
        {"version": str(version), "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]})
    status, metadata = _http("GET", rest.model_url(base, MODEL_NAME) + "/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": MODEL_NAME, "signature_name": "",
                                      "version": str(version)}
    serving_default = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving_default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert serving_default["method_name"] == "tensorflow/serving/predict"


@pytest.mark.parametrize("method, path, body, status, error", [
    ("POST", "/v1/models/other:predict", {"instances": []}, 404,
     "Servable not found for request: Latest(other)"),
    ("GET", "/v1/models/other", None, 404, "Could not find any versions of model other"),
    ("GET", f"/v1/models/{MODEL_NAME}/versions/999999", None, 404,
     f"Could not find version 999999 of model {MODEL_NAME}"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"signature_name": "nope", "instances": [1]},
     400, 'Serving signature name: "nope" not found in signature def'),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"signature_name": "serving_default"}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": []}, 400,
     "No values in 'instances' array"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [{"b64": "%%%"}]}, 400,
     "Unable to base64 decode"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [{"b64": "bm90IGFuIGltYWdl"}]},
     400, "image_bytes[0]: Unknown image file format. One of JPEG, PNG, GIF, BMP required."),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [{"b64": ""}] * 9}, 400,
     "the request holds 9 inputs, over this server's limit of 8 per request (cxr serve "
     "--max-batch-size); send fewer per request"),
    ("POST", "/v1/models", {}, 400, "Malformed request: POST /v1/models"),
])
def test_rest_errors_carry_tf_servings_status_and_text(rest_served, method, path, body, status,
                                                       error):
    _, base = rest_served
    assert _http(method, base + path, body) == (status, {"error": error})


def test_rest_bad_json_and_oversized_bodies_are_one_line_errors(rest_served):
    _, base = rest_served
    url = rest.predict_url(base, MODEL_NAME)
    status, body = _http("POST", url, raw=b"{not json")
    assert status == 400 and body["error"].startswith("JSON Parse error: ")
    status, body = _http("POST", url, raw=b" " * (2 ** 20 + 1))
    assert status == 413
    assert body["error"] == (f"request body of {2 ** 20 + 1} bytes is over this server's "
                             f"limit of {2 ** 20} bytes (cxr serve --max-request-mb); send "
                             "fewer images per request")
    assert _http("GET", base + "/healthz")[0] == 404


def test_rest_client_against_the_server(rest_served, tmp_path):
    running, base = rest_served
    paths = sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:3]
    rest_client = rest.RestClient(base, MODEL_NAME, batch_size=2)
    assert rest_client.status() == {running.servable.version: "AVAILABLE"}
    assert set(rest_client.signature().inputs) == {features.SERVING_INPUT}
    predictions = rest_client.predict_files(paths)
    with client.PredictionClient(f"127.0.0.1:{running.grpc_port}", MODEL_NAME) as grpc_client:
        over_grpc = grpc_client.predict_files(paths)
    assert [p.predicted_class for p in predictions] == [p.predicted_class for p in over_grpc]
    for a, b in zip(predictions, over_grpc):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    with pytest.raises(client.ServingError, match=r"answered HTTP 404: Servable not found"):
        rest.RestClient(base, "other").predict_files(paths[:1])
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    with pytest.raises(client.ServingError, match=f"^cannot classify {notes}: not an image"):
        rest_client.predict_files([str(notes)])
