"""TensorFlow Serving's REST API (port 8501): the same requests as serving/client.py in JSON.

Binary inputs travel base64-encoded as {"b64": ...}, the encoding TF Serving's REST API
documents for DT_STRING tensors; responses come back in the row ("instances") format.
"""
import base64
import json
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

from models import features
from serving.client import (Prediction, ServingError, batches, parse_outputs, read_images,
                            with_retries)

TRANSIENT_HTTP_STATUSES = (502, 503, 504)


def predict_url(base_url: str, model_name: str, version: Optional[int] = None) -> str:
    """http://host:8501/v1/models/NAME[/versions/N]:predict"""
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{version}"
    return base_url.rstrip("/") + path + ":predict"


def encode_request(images: Sequence[bytes]) -> Dict:
    """The JSON body of a Predict call on serving_default, one instance per image."""
    return {
        "signature_name": features.SERVING_SIGNATURE,
        "instances": [{features.SERVING_INPUT: {"b64": base64.b64encode(image).decode("ascii")}}
                      for image in images],
    }


def decode_response(body: Dict) -> List[Prediction]:
    """Row-format predictions: a list of {output name: value} objects, one per image."""
    rows = body["predictions"]
    return parse_outputs({name: [row[name] for row in rows]
                          for name in (features.PROBABILITIES_OUTPUT,
                                       features.CLASS_NAMES_OUTPUT,
                                       features.PREDICTED_CLASS_OUTPUT)})


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in TRANSIENT_HTTP_STATUSES
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError))


class RestClient:
    """Predict over TF Serving's REST API, with the gRPC client's batching and retries."""

    def __init__(self, base_url: str, model_name: str, version: Optional[int] = None,
                 timeout_seconds: float = 10.0, retries: int = 3, backoff_seconds: float = 0.5,
                 batch_size: int = 8):
        self.url = predict_url(base_url, model_name, version)
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.batch_size = batch_size

    def _post(self, body: Dict) -> Dict:
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})

        def call():
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return json.load(response)

        try:
            return with_retries(call, _is_transient, self.retries, self.backoff_seconds)
        except urllib.error.HTTPError as error:
            message = _error_text(error)
            kind = "usage" if error.code in (400, 404) else "server"
            raise ServingError(f"{self.url} answered HTTP {error.code}: {message}",
                               kind=kind) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise ServingError(f"cannot reach {self.url} after {self.retries + 1} attempt(s): "
                               f"{reason}") from None

    def predict(self, images: Sequence[bytes]) -> List[Prediction]:
        predictions = []
        for batch in batches(list(images), self.batch_size):
            predictions.extend(decode_response(self._post(encode_request(batch))))
        return predictions

    def predict_files(self, paths: Sequence[str]) -> List[Prediction]:
        return self.predict(read_images(paths))


def _error_text(error: urllib.error.HTTPError) -> str:
    """TF Serving answers errors as {"error": "..."}; fall back to the raw body."""
    body = error.read().decode(errors="replace")
    try:
        return str(json.loads(body)["error"]).splitlines()[0]
    except (ValueError, KeyError, TypeError, IndexError):
        return body.strip().splitlines()[0] if body.strip() else error.reason
