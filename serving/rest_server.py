"""TensorFlow Serving's REST API (what it answers on port 8501) over a loaded Servable.

Paths, JSON bodies, HTTP status codes and error texts follow TF Serving's HTTP handler:

    POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"signature_name", "instances" | "inputs"}
    GET  /v1/models/NAME[/versions/N | /labels/L]            model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signature defs

Requests in the row ("instances") format are answered with "predictions", columnar ("inputs")
with "outputs"; binary strings travel as {"b64": ...}. Errors are {"error": "<message>"} with
the HTTP status TF Serving maps the gRPC code to. Only predict is offered (no classify or
regress); a body over the server's limit gets HTTP 413.
"""
import base64
import binascii
import http.server
import json
import re
import threading
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from models import features
from serving.server import RequestError, Servable

PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                          r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r"(?:/(metadata))?", re.IGNORECASE)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
HTTP_STATUS = {  # TF Serving's http_server.cc
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}
BYTES_SUFFIX = "_bytes"  # output names TF Serving writes as {"b64": ...}
_READ_CHUNK = 2 ** 20


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _string_leaf(value: Any) -> bytes:
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise _invalid(f"JSON Value: {_short(value)} not formatted correctly for base64 "
                           "data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode()
    raise _invalid(f"JSON Value: {_short(value)} is not of expected type: string")


def _to_array(value: Any, dtype: tf.DType) -> np.ndarray:
    """One JSON value (scalar or nested lists) -> an array of the input's dtype."""
    def strings(node):
        return [strings(item) for item in node] if isinstance(node, list) else _string_leaf(node)

    try:
        if dtype == tf.string:
            array = np.array(strings(value), dtype=object)
        else:
            array = np.array(value, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError) as error:
        raise _invalid(f"JSON Value: {_short(value)} is not of expected type: "
                       f"{dtype.name} ({error})") from None
    if array.dtype == object and dtype == tf.string and any(
            isinstance(item, (list, np.ndarray)) for item in array.ravel()):
        raise _invalid(f"JSON Value: {_short(value)} is a list of unequal lengths")
    return array


def _instances(rows: Any, specs: Dict[str, tf.TensorSpec]) -> Dict[str, np.ndarray]:
    """The row format: one element per example, an object of named inputs or a plain value."""
    if not isinstance(rows, list):
        raise _invalid("Excepting 'instances' to be an list/array")
    if not rows:
        raise _invalid("No values in 'instances' array")
    names = sorted(specs)

    def is_object(row):
        return isinstance(row, dict) and set(row) != {"b64"}

    as_objects = is_object(rows[0])
    if not as_objects and len(specs) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple "
                       "input tensors required as per tensorinfo_map")
    columns: Dict[str, List[np.ndarray]] = {name: [] for name in names}
    for index, row in enumerate(rows):
        if as_objects != is_object(row):
            raise _invalid(f"Expecting {'object' if as_objects else 'value/list'} but got "
                           f"{'list' if as_objects else 'object'} at item {index} of input list")
        if as_objects and set(row) != set(names):
            raise _invalid(f"Failed to process element: {index} of 'instances' list. JSON "
                           f"object: {_short(row)} keys must be equal to: {','.join(names)}")
        for name in names:
            item = _to_array(row[name] if as_objects else row, specs[name].dtype)
            if columns[name] and item.shape != columns[name][0].shape:
                raise _invalid(f"Failed to process element: {index} of 'instances' list. "
                               f"Error: Expecting shape {list(columns[name][0].shape)} but "
                               f"got: {list(item.shape)}")
            columns[name].append(item)
    return {name: np.stack(items) for name, items in columns.items()}


def _inputs(value: Any, specs: Dict[str, tf.TensorSpec]) -> Dict[str, np.ndarray]:
    """The columnar format: one value per input (or a plain value for a single input)."""
    if not isinstance(value, dict) or set(value) == {"b64"}:
        if len(specs) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple "
                           "input tensors required as per tensorinfo_map")
        (name, spec), = specs.items()
        return {name: _to_array(value, spec.dtype)}
    for name in sorted(specs):
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
    return {name: _to_array(value[name], spec.dtype) for name, spec in specs.items()}


def _json_value(value: Any, as_bytes: bool) -> Any:
    if isinstance(value, np.ndarray):
        return [_json_value(item, as_bytes) for item in value]
    if isinstance(value, bytes):
        if as_bytes:
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.float32):  # shortest text that reads back as the same float32
        return float(str(value))
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def predictions_body(outputs: Dict[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
    """TF Serving's response: {"predictions": [per example]} or {"outputs": ...}."""
    names = sorted(outputs)
    as_bytes = {name: name.endswith(BYTES_SUFFIX) for name in names}
    if not row_format:
        columns = {name: _json_value(outputs[name], as_bytes[name]) for name in names}
        return {"outputs": columns if len(names) > 1 else columns[names[0]]}
    batch = len(outputs[names[0]])
    rows = []
    for index in range(batch):
        row = {name: _json_value(outputs[name][index], as_bytes[name]) for name in names}
        rows.append(row if len(names) > 1 else row[names[0]])
    return {"predictions": rows}


class RestApi:
    """Routes one HTTP request to the Servable: (HTTP status, JSON body)."""

    def __init__(self, servable: Servable):
        self.servable = servable

    def handle(self, method: str, path: str, body: bytes) -> Tuple[int, Dict[str, Any]]:
        try:
            return 200, self._dispatch(method, path, body)
        except RequestError as error:
            return HTTP_STATUS.get(error.code, 500), {"error": error.message}
        except Exception as error:  # noqa: BLE001  an answer, never a dropped connection
            return 500, {"error": f"internal error: {type(error).__name__}: {error}"}

    def _dispatch(self, method: str, path: str, body: bytes) -> Dict[str, Any]:
        predict = PREDICT_PATH.fullmatch(path) if method == "POST" else None
        status = STATUS_PATH.fullmatch(path) if method == "GET" else None
        if predict:
            name, version, label, verb = predict.groups()
            if verb.lower() != "predict":
                raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{verb} is not offered by cxr serve; use predict")
            return self._predict(urllib.parse.unquote(name), _version(version),
                                 urllib.parse.unquote(label or ""), body)
        if status:
            name, version, label, subresource = status.groups()
            if not name:
                raise _invalid("Missing model name in request.")
            name, label = urllib.parse.unquote(name), urllib.parse.unquote(label or "")
            if subresource:
                response = self.servable.metadata(name, _version(version), label)
                return {"model_spec": _proto_json(response.model_spec),
                        "metadata": {"signature_def": _proto_json(
                            self.servable.signature_def_map())}}
            return _proto_json(self.servable.status(name, _version(version), label))
        raise _invalid(f"Malformed request: {method} {path}")

    def _predict(self, name: str, version: Optional[int], label: str,
                 body: bytes) -> Dict[str, Any]:
        if not body:
            raise _invalid("JSON Parse error: The document is empty")
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            where = f" at offset: {error.pos}" if isinstance(error, json.JSONDecodeError) else ""
            reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            raise _invalid(f"JSON Parse error: {reason}{where}") from None
        if not isinstance(request, dict):
            raise _invalid(f"JSON Value: {_short(request)} Is not object")
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise _invalid(f"JSON Value: {_short(request)} not formatted correctly. "
                           "'signature_name' key must be a string value.")
        self.servable.check_model_spec(name, version, label)
        signature_name = signature_name or features.SERVING_SIGNATURE
        if signature_name not in self.servable.signature_defs:
            raise _invalid(f'Serving signature name: "{signature_name}" not found in '
                           "signature def")
        specs = self.servable.input_specs(signature_name)
        if "instances" in request and "inputs" in request:
            raise _invalid(f"JSON Value: {_short(request)} Not formatted correctly expecting "
                           "only one of 'inputs' or 'instances' keys to exist ")
        if "instances" in request:
            inputs, row_format = _instances(request["instances"], specs), True
        elif "inputs" in request:
            inputs, row_format = _inputs(request["inputs"], specs), False
        else:
            raise _invalid("Missing 'inputs' or 'instances' key")
        outputs = self.servable.predict(signature_name, inputs)
        return predictions_body(outputs, row_format)


def _version(text: Optional[str]) -> Optional[int]:
    return int(text) if text else None


def _proto_json(message) -> Dict[str, Any]:
    return json.loads(json_format.MessageToJson(message, including_default_value_fields=True,
                                                preserving_proto_field_name=True))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    server_version = "cxr-serve"
    timeout = 120  # seconds an idle keep-alive connection may hold its thread
    api: RestApi  # set on the subclass RestServer makes

    def log_message(self, format, *args):  # noqa: A002  (the base class's signature)
        """Quiet: a load test would print a line per request."""

    def do_GET(self):  # noqa: N802  (http.server's method names)
        self._answer("GET", b"")

    def do_POST(self):  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(411, {"error": "a POST needs a Content-Length header"})
            self.close_connection = True
            return
        limit = self.api.servable.limits.max_request_bytes
        if int(length) > limit:
            self._discard(int(length))
            self._send(413, {"error": f"request body of {int(length)} bytes is over this "
                                      f"server's limit of {limit} bytes (cxr serve "
                                      "--max-request-mb); send fewer images per request"})
            return
        self._answer("POST", self.rfile.read(int(length)))

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, _READ_CHUNK))
            if not chunk:
                break
            length -= len(chunk)

    def _answer(self, method: str, body: bytes) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not API_PATH.fullmatch(path):
            self._send(404, {"error": f"Not Found: {path}"})
            return
        self._send(*self.api.handle(method, path, body))

    def _send(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class RestServer:
    """TF Serving's REST API for one Servable on host:port (0 picks a free port)."""

    def __init__(self, servable: Servable, host: str, port: int):
        handler = type("Handler", (_Handler,), {"api": RestApi(servable)})
        try:
            self._httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="cxr-serve-rest")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
