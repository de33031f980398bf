"""TensorFlow Serving's REST API (port 8501): the same requests as serving/client.py in JSON.

Images go through the one image path (imaging.prepare) first, as with the gRPC client.
Binary inputs travel base64-encoded as {"b64": ...}, the encoding TF Serving's REST API
documents for DT_STRING tensors; responses come back in the row ("instances") format.
"""
import base64
import json
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

import grpc
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from models import features
from serving.client import (Prediction, ServingError, check_signature, default_names,
                            parse_outputs, predict_in_batches, read_images, with_retries)

TRANSIENT_HTTP_STATUSES = (502, 503, 504)
# What an HTTP status says about the request, in the gRPC terms the clients share.
CODE_BY_HTTP_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
                       413: grpc.StatusCode.RESOURCE_EXHAUSTED}


def model_url(base_url: str, model_name: str, version: Optional[int] = None) -> str:
    """http://host:8501/v1/models/NAME[/versions/N]"""
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{version}"
    return base_url.rstrip("/") + path


def predict_url(base_url: str, model_name: str, version: Optional[int] = None) -> str:
    """http://host:8501/v1/models/NAME[/versions/N]:predict"""
    return model_url(base_url, model_name, version) + ":predict"


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
    names = set(rows[0]) if rows else set()
    return parse_outputs({name: [row[name] for row in rows] for name in names})


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in TRANSIENT_HTTP_STATUSES
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError))


class RestClient:
    """Predict, model status and metadata over TF Serving's REST API, with the gRPC client's
    batching, retries and error messages."""

    def __init__(self, base_url: str, model_name: str, version: Optional[int] = None,
                 timeout_seconds: float = 10.0, retries: int = 3, backoff_seconds: float = 0.5,
                 batch_size: int = 8):
        if batch_size < 1 or retries < 0 or timeout_seconds <= 0:
            raise ValueError("batch_size must be >= 1, retries >= 0 and timeout > 0")
        self.model_url = model_url(base_url, model_name, version)
        self.url = self.model_url + ":predict"
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.batch_size = batch_size

    def _request(self, url: str, body: Optional[Dict] = None) -> Dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data,
                                         headers={"Content-Type": "application/json"})

        def call():
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return json.load(response)

        try:
            return with_retries(call, _is_transient, self.retries, self.backoff_seconds)
        except urllib.error.HTTPError as error:
            message = _error_text(error)
            code = CODE_BY_HTTP_STATUS.get(error.code)
            kind = "usage" if code else "server"
            hint = ("; send fewer images per request (--batch-size)"
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "")
            raise ServingError(f"{url} answered HTTP {error.code}: {message}{hint}",
                               kind=kind, code=code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise ServingError(f"cannot reach {url} after {self.retries + 1} attempt(s): "
                               f"{reason}") from None

    def status(self) -> Dict[int, str]:
        """GET /v1/models/NAME: version -> state (e.g. {3: "AVAILABLE"})."""
        body = self._request(self.model_url)
        return {int(status["version"]): status["state"]
                for status in body["model_version_status"]}

    def signature(self) -> meta_graph_pb2.SignatureDef:
        """GET .../metadata: the served `serving_default`, checked as the gRPC client does."""
        body = self._request(self.model_url + "/metadata")
        signature_map = json_format.ParseDict(body["metadata"]["signature_def"],
                                              get_model_metadata_pb2.SignatureDefMap())
        return check_signature(signature_map, self.model_url)

    def _predict_prepared(self, batch: Sequence[bytes]) -> List[Prediction]:
        return decode_response(self._request(self.url, encode_request(batch)))

    def predict(self, images: Sequence[bytes], names: Optional[Sequence[str]] = None
                ) -> List[Prediction]:
        """One Prediction per image (JPEG, PNG or DICOM bytes), `batch_size` per request."""
        return predict_in_batches(images, names or default_names(len(images)),
                                  self.batch_size, self._predict_prepared)

    def predict_files(self, paths: Sequence[str]) -> List[Prediction]:
        return self.predict(read_images(paths), names=list(paths))


def _error_text(error: urllib.error.HTTPError) -> str:
    """TF Serving answers errors as {"error": "..."}; fall back to the raw body."""
    body = error.read().decode(errors="replace")
    try:
        return str(json.loads(body)["error"]).splitlines()[0]
    except (ValueError, KeyError, TypeError, IndexError):
        return body.strip().splitlines()[0] if body.strip() else error.reason
