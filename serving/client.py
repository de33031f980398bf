"""A TensorFlow Serving gRPC client for the exported `serving_default` signature.

Each image first goes through the one image path (imaging.prepare), exactly as ingestion
stored the training images: EXIF rotation, CMYK, transparency and DICOM are handled here,
because the served model itself only decodes JPEG and PNG. The prepared bytes are sent
(the model decodes, resizes and normalises them itself), several images per request, with a
deadline and retries with exponential backoff for the two transient statuses only
(UNAVAILABLE, DEADLINE_EXCEEDED); every other failure is raised at once as a ServingError
with a one-line message naming the images concerned.
"""
import dataclasses
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence, TypeVar

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from imaging import prepare
from models import features

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
SIGNATURE_DEF_FIELD = "signature_def"
# How `cxr serve` names the inputs the model rejected: "image_bytes[3]: ...".
_REJECTED_INPUT = re.compile(re.escape(features.SERVING_INPUT) + r"\[(\d+)\]")
T = TypeVar("T")


class ServingError(Exception):
    """A request failed; `kind` says whose fault: "usage" (bad input) or "server"."""

    def __init__(self, message: str, kind: str = "server",
                 code: Optional[grpc.StatusCode] = None):
        super().__init__(message)
        self.kind = kind
        self.code = code


@dataclasses.dataclass(frozen=True)
class Prediction:
    predicted_class: str
    probabilities: Dict[str, float]  # class name -> probability, in the model's class order
    # The out-of-distribution gate; None for a model exported without it.
    chest_xray_score: Optional[float] = None  # higher = more like the training films
    is_chest_xray: Optional[bool] = None


def read_images(paths: Sequence[str]) -> List[bytes]:
    """The encoded bytes of each file, failing on the first one that cannot be read."""
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise ServingError(f"image file not found: {path}", kind="usage")
        try:
            with open(path, "rb") as f:
                images.append(f.read())
        except OSError as error:
            raise ServingError(f"cannot read {path}: {error.strerror}", kind="usage")
    return images


def prepare_images(images: Sequence[bytes], names: Sequence[str]) -> List[bytes]:
    """Each image as ingestion stored the training images (imaging.prepare); ServingError
    naming the first one that cannot be used, before anything is sent."""
    prepared = []
    for name, image in zip(names, images):
        try:
            prepared.append(prepare.prepare_image(image).encoded)
        except prepare.Rejected as rejection:
            raise ServingError(f"cannot classify {name}: {rejection}", kind="usage") from None
    return prepared


def default_names(count: int) -> List[str]:
    return [f"image {index + 1}" for index in range(count)]


def predict_in_batches(images: Sequence[bytes], names: Sequence[str], batch_size: int,
                       send: Callable[[Sequence[bytes]], List["Prediction"]]
                       ) -> List["Prediction"]:
    """Prepare every image, then send(batch) for each batch of `batch_size`; a batch the
    server rejects (INVALID_ARGUMENT) raises a ServingError naming the images it rejected
    (all of the batch when the server does not say which)."""
    prepared = prepare_images(images, names)
    predictions = []
    for start in range(0, len(prepared), batch_size):
        batch_names = list(names[start:start + batch_size])
        try:
            predictions.extend(send(prepared[start:start + batch_size]))
        except ServingError as error:
            if error.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            indices = sorted({int(i) for i in _REJECTED_INPUT.findall(str(error))
                              if int(i) < len(batch_names)})
            rejected = [batch_names[i] for i in indices] or batch_names
            raise ServingError(f"cannot classify {', '.join(rejected)}: {error}", kind="usage",
                               code=error.code) from None
    return predictions


def with_retries(call: Callable[[], T], is_transient: Callable[[Exception], bool],
                 retries: int, backoff_seconds: float) -> T:
    """call(), retried up to `retries` times after transient failures, waiting
    backoff_seconds * 2**attempt in between; the last failure is re-raised."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001  re-raised unless transient
            if not is_transient(error) or attempt == retries:
                raise
            time.sleep(backoff_seconds * 2 ** attempt)
            attempt += 1


def _is_transient_rpc_error(error: Exception) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in RETRYABLE


class PredictionClient:
    """Predict and GetModelMetadata against TF Serving (or `cxr serve`) over gRPC."""

    def __init__(self, target: str, model_name: str, version: Optional[int] = None,
                 timeout_seconds: float = 10.0, retries: int = 3, backoff_seconds: float = 0.5,
                 batch_size: int = 8):
        if batch_size < 1 or retries < 0 or timeout_seconds <= 0:
            raise ValueError("batch_size must be >= 1, retries >= 0 and timeout > 0")
        self.target = target
        self.model_name = model_name
        self.version = version
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.batch_size = batch_size
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _model_text(self) -> str:
        version = f" version {self.version}" if self.version is not None else ""
        return f"model {self.model_name!r}{version}"

    def _fill_model_spec(self, model_spec, signature_name: str = "") -> None:
        model_spec.name = self.model_name
        if self.version is not None:
            model_spec.version.value = self.version
        model_spec.signature_name = signature_name

    def _call(self, method, request):
        try:
            return with_retries(lambda: method(request, timeout=self.timeout_seconds),
                                _is_transient_rpc_error, self.retries, self.backoff_seconds)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.RpcError) -> ServingError:
        code, lines = error.code(), (error.details() or "").splitlines()
        details = lines[0] if lines else "no details"
        if code in RETRYABLE:
            return ServingError(f"{self.target} {code.name} after {self.retries + 1} "
                                f"attempt(s) (deadline {self.timeout_seconds:g} s each): "
                                f"{details}", code=code)
        if code == grpc.StatusCode.NOT_FOUND:
            return ServingError(f"{self._model_text()} not found on {self.target} "
                                f"(NOT_FOUND: {details})", kind="usage", code=code)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return ServingError(f"request rejected by {self.target} (INVALID_ARGUMENT: "
                                f"{details})", kind="usage", code=code)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ServingError(f"request too large for {self.target} (RESOURCE_EXHAUSTED: "
                                f"{details}); send fewer images per request (--batch-size)",
                                kind="usage", code=code)
        return ServingError(f"{self.target} answered {code.name}: {details}", code=code)

    def status(self) -> Dict[int, str]:
        """ModelService.GetModelStatus: version -> state (e.g. {3: "AVAILABLE"})."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_model_spec(request.model_spec)
        response = self._call(self._model_stub.GetModelStatus, request)
        return {status.version: get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
                for status in response.model_version_status}

    def signature(self) -> "tf.compat.v1.SignatureDef":
        """The served `serving_default` SignatureDef, checked against models/features.py."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[SIGNATURE_DEF_FIELD])
        self._fill_model_spec(request.model_spec)
        response = self._call(self._stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        return check_signature(signature_map, f"{self._model_text()} on {self.target}")

    def _predict_prepared(self, batch: Sequence[bytes]) -> List[Prediction]:
        request = predict_pb2.PredictRequest()
        self._fill_model_spec(request.model_spec, features.SERVING_SIGNATURE)
        request.inputs[features.SERVING_INPUT].CopyFrom(
            tf.make_tensor_proto(list(batch), dtype=tf.string, shape=[len(batch)]))
        response = self._call(self._stub.Predict, request)
        return parse_outputs({name: tf.make_ndarray(tensor)
                              for name, tensor in response.outputs.items()})

    def predict(self, images: Sequence[bytes], names: Optional[Sequence[str]] = None
                ) -> List[Prediction]:
        """One Prediction per image (encoded file bytes: JPEG, PNG or DICOM), in order,
        `batch_size` images per request; `names` name the images in errors."""
        return predict_in_batches(images, names or default_names(len(images)),
                                  self.batch_size, self._predict_prepared)

    def predict_files(self, paths: Sequence[str]) -> List[Prediction]:
        """Like predict(), naming the files the model rejected."""
        return self.predict(read_images(paths), names=list(paths))


NOT_A_CHEST_XRAY = "not a frontal chest X-ray"


def describe(prediction: Prediction) -> str:
    """One line: the class and its probabilities, led by NOT_A_CHEST_XRAY when the model's
    gate flags the image (the class stays available for whoever needs it)."""
    scores = ", ".join(f"{name} {p:.3f}" for name, p in prediction.probabilities.items())
    line = f"{prediction.predicted_class} ({scores})"
    if prediction.chest_xray_score is None:
        return line
    gate = f"chest X-ray score {prediction.chest_xray_score:.3f}"
    if prediction.is_chest_xray:
        return f"{line}; {gate}"
    return f"{NOT_A_CHEST_XRAY} ({gate}); as a chest X-ray it would be {line}"


def check_signature(signature_map: get_model_metadata_pb2.SignatureDefMap, served: str
                    ) -> "tf.compat.v1.SignatureDef":
    """The `serving_default` SignatureDef, checked against models/features.py; ServingError
    naming what `served` offers instead."""
    signature = signature_map.signature_def.get(features.SERVING_SIGNATURE)
    expected_outputs = {features.PROBABILITIES_OUTPUT, features.CLASS_NAMES_OUTPUT,
                        features.PREDICTED_CLASS_OUTPUT}
    if (signature is None or set(signature.inputs) != {features.SERVING_INPUT}
            or not expected_outputs <= set(signature.outputs)):
        found = ({name: (sorted(s.inputs), sorted(s.outputs))
                  for name, s in signature_map.signature_def.items()})
        raise ServingError(
            f"{served} has no {features.SERVING_SIGNATURE!r} signature taking "
            f"{features.SERVING_INPUT!r} and returning {sorted(expected_outputs)}; it serves "
            f"{found}", kind="usage")
    return signature


def parse_outputs(outputs: Dict[str, Sequence]) -> List[Prediction]:
    """serving_default's outputs (arrays or nested lists) -> one Prediction per image."""
    count = len(outputs[features.PROBABILITIES_OUTPUT])
    scores = outputs.get(features.CHEST_XRAY_SCORE_OUTPUT, [None] * count)
    flags = outputs.get(features.IS_CHEST_XRAY_OUTPUT, [None] * count)
    predictions = []
    for probabilities, names, predicted, score, flag in zip(
            outputs[features.PROBABILITIES_OUTPUT], outputs[features.CLASS_NAMES_OUTPUT],
            outputs[features.PREDICTED_CLASS_OUTPUT], scores, flags):
        predictions.append(Prediction(
            predicted_class=_text(predicted),
            probabilities={_text(name): float(p) for name, p in zip(names, probabilities)},
            chest_xray_score=None if score is None else float(score),
            is_chest_xray=None if flag is None else bool(flag)))
    return predictions


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
