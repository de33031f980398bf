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


def test_unreachable_rest_server_fails_after_retries(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = tmp_path / "image.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0")
    rest_client = rest.RestClient(f"http://127.0.0.1:{port}", "cxr_classifier", retries=1,
                                  backoff_seconds=0.01)
    with pytest.raises(client.ServingError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1/"
                                                  r"models/cxr_classifier:predict after 2 "
                                                  r"attempt\(s\): .*refused"):
        rest_client.predict_files([str(image)])
