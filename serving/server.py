"""A development stand-in for TensorFlow Serving: its gRPC and REST APIs on loopback.

It serves the newest version under a model base path (the Pusher's layout, what TF Serving's
MODEL_BASE_PATH points at) through the same protobufs, JSON bodies, signature names, tensor
names and error texts, so a client written against it works unchanged against the real
server. gRPC: PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus.
REST (serving/rest_server.py): predict, model status and model metadata. It is for
development and tests, not for production.

Two things TF Serving does not do: a request may hold at most `Limits.max_batch_size` inputs
and `Limits.max_request_bytes` bytes (clear INVALID_ARGUMENT / RESOURCE_EXHAUSTED errors
instead of unbounded memory), and a refusal names the inputs refused (`image_bytes[3]: ...`).
Image bytes the model cannot decode are refused before the model runs, in TensorFlow's words
(imaging/prepare.model_decode_error: each failing TensorFlow call keeps memory for good, so a
long-running server must not let the model find them); whatever still fails in the model is
named by running the batch's inputs one at a time.
"""
import dataclasses
import os
import threading
from concurrent import futures
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from imaging import prepare
from models import features
from serving import warmup
from serving.layout import SAVED_MODEL_FILE, ModelDirError, newest_version
from serving.limits import Limits

SIGNATURE_DEF_FIELD = "signature_def"
LOOPBACK = "127.0.0.1"
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class TensorFeeder:
    """Request arrays as tensors, without building an EagerTensor from a Python value.

    With TensorFlow 2.16 on Python 3.11, every EagerTensor built from a Python value
    (`tf.constant`, or an array handed to a function) keeps two small Python objects for good,
    about 350 bytes (tensorflow/tensorflow#62551): 0.35 MiB per 1,000 requests in a server that
    runs for days. Tensors that ops return do not, so an array reaches the model as the output
    of a `numpy_function` that picks it up by slot number; each slot's number is a tensor built
    once and reused (as many slots as requests run at the same time).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._free_slots: List[Tuple[int, tf.Tensor]] = []
        self._slot_count = 0
        self._arrays: Dict[int, np.ndarray] = {}
        self._fetchers: Dict[tf.DType, Callable[[tf.Tensor], tf.Tensor]] = {}

    @staticmethod
    def feeds(array: np.ndarray, dtype: tf.DType) -> bool:
        """Whether the array already is what `tf.constant(array, dtype)` would hold."""
        if dtype == tf.string:
            return array.dtype == object and all(isinstance(item, bytes)
                                                 for item in array.flat)
        return array.dtype == dtype.as_numpy_dtype

    def tensor(self, array: np.ndarray, dtype: tf.DType) -> tf.Tensor:
        """The array as a tensor of dtype; only for arrays `feeds` accepts."""
        with self._lock:
            if self._free_slots:
                slot, token = self._free_slots.pop()
            else:
                slot, token = self._slot_count, tf.constant(self._slot_count, tf.int32)
                self._slot_count += 1
            fetch = self._fetchers.get(dtype)
            if fetch is None:
                fetch = self._fetchers[dtype] = self._fetcher(dtype)
        self._arrays[slot] = array
        try:
            tensor = fetch(token)
        finally:
            del self._arrays[slot]
            with self._lock:
                self._free_slots.append((slot, token))
        return tensor

    def _fetcher(self, dtype: tf.DType) -> Callable[[tf.Tensor], tf.Tensor]:
        arrays = self._arrays

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
        def fetch(slot: tf.Tensor) -> tf.Tensor:
            return tf.numpy_function(lambda number: arrays[int(number)], [slot], dtype,
                                     stateful=True)

        return fetch


class RequestError(Exception):
    """A request the server refuses: a gRPC status code and TF Serving's message for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _signature_defs(version_dir: str) -> Dict[str, "tf.compat.v1.SignatureDef"]:
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    return dict(saved_model.meta_graphs[0].signature_def)


def servable_request_text(name: str, version: Optional[int], label: str) -> str:
    """How TF Serving names a servable request in its NOT_FOUND messages."""
    if version is not None:
        return f"Specific({name}, {version})"
    if label:
        return f"Label({name}, {label})"
    return f"Latest({name})"


def _op_error_cause(message: str) -> str:
    """The line of a TF op error that says what went wrong, without graph boilerplate."""
    boilerplate = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(boilerplate):
            return line.split(" [[", 1)[0]
    return "the model failed on this input"


def _rejection_text(tensors: Dict[str, tf.Tensor], rejected: Sequence[Tuple[int, str]]) -> str:
    """'image_bytes[1]: <cause>; image_bytes[3]: <cause>', one line."""
    names = "/".join(sorted(tensors))
    return "; ".join(f"{names}[{index}]: {cause}" for index, cause in rejected)


def _undecodable_images(tensors: Dict[str, tf.Tensor]) -> List[Tuple[int, str]]:
    """(index, TensorFlow's words) for each image in a serving_default-style request that the
    model is known to be unable to decode, found without running the model."""
    images = tensors.get(features.SERVING_INPUT)
    if images is None or images.dtype != tf.string or not images.shape.rank:
        return []
    rejected = []
    for index, data in enumerate(np.reshape(images.numpy(), [-1])):
        cause = prepare.model_decode_error(data)
        if cause is not None:
            rejected.append((index, cause))
    return rejected


class Servable:
    """One loaded SavedModel version, shared by the gRPC and REST front ends."""

    def __init__(self, model_base_path: str, model_name: str, limits: Limits = Limits()):
        self.model_name = model_name
        self.limits = limits
        self.version, self.version_dir = newest_version(model_base_path)
        self._model = tf.saved_model.load(self.version_dir)
        self.signature_defs = _signature_defs(self.version_dir)
        self._feeder = TensorFeeder()
        self.warm_up_requests = self._warm_up()

    def _as_tensor(self, value: np.ndarray, dtype: tf.DType) -> tf.Tensor:
        """Arrays of the right type go through the feeder; the rest get tf.constant's
        conversion, and its error texts."""
        array = np.asarray(value)
        if self._feeder.feeds(array, dtype):
            return self._feeder.tensor(array, dtype)
        return tf.constant(value, dtype)

    def _warm_up(self) -> int:
        """Run requests before serving, as TF Serving does: a signature's first call is slow
        (about 20 s for 16 concurrent first requests on 2 cores, against 0.2 s after). The
        version's own warm-up file (TF Serving's assets.extra/tf_serving_warmup_requests)
        is replayed when present (a damaged one is a ModelDirError: TF Serving refuses such a
        version); otherwise serving_default gets one synthetic gray PNG."""
        path = os.path.join(self.version_dir, warmup.WARMUP_PATH)
        requests = []
        if os.path.isfile(path):
            try:
                logs = warmup.read(path)
            except warmup.WarmupError as error:
                raise ModelDirError(str(error)) from None
            for log in logs:
                if log.HasField("predict_log"):
                    request = log.predict_log.request
                    requests.append((request.model_spec.signature_name
                                     or features.SERVING_SIGNATURE,
                                     {name: tf.make_ndarray(tensor)
                                      for name, tensor in request.inputs.items()}))
        elif features.SERVING_SIGNATURE in self._model.signatures and set(
                self.input_specs(features.SERVING_SIGNATURE)) == {features.SERVING_INPUT}:
            requests.append((features.SERVING_SIGNATURE,
                             {features.SERVING_INPUT: np.array([warmup.sample_png()], dtype=object)}))
        for index, (signature_name, inputs) in enumerate(requests):
            try:  # the request limits are for clients: the Pusher's warm-up batch is 8
                self.predict(signature_name, inputs, enforce_limits=False)
            except RequestError as error:
                raise ModelDirError(f"{self.version_dir} fails warm-up request {index}: "
                                    f"{error.message}") from None
        return len(requests)

    def check_model_spec(self, name: str, version: Optional[int], label: str = "") -> None:
        """RequestError(NOT_FOUND) unless the request names this model and version."""
        if name != self.model_name or label or version not in (None, self.version):
            raise RequestError(grpc.StatusCode.NOT_FOUND, "Servable not found for request: "
                               + servable_request_text(name, version, label))

    def input_specs(self, signature_name: str) -> Dict[str, tf.TensorSpec]:
        if signature_name not in self._model.signatures:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        return self._model.signatures[signature_name].structured_input_signature[1]

    def predict(self, signature_name: str, inputs: Dict[str, np.ndarray],
                output_filter: Sequence[str] = (), enforce_limits: bool = True
                ) -> Dict[str, np.ndarray]:
        """The signature's outputs for these inputs; RequestError for anything refused."""
        specs = self.input_specs(signature_name)
        if set(inputs) != set(specs):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"inputs {sorted(inputs)} do not match signature "
                               f"{signature_name!r}, which takes {sorted(specs)}")
        try:
            tensors = {name: self._as_tensor(inputs[name], spec.dtype)
                       for name, spec in specs.items()}
        except (TypeError, ValueError) as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               str(error).splitlines()[0]) from None
        batch = max((int(t.shape[0]) for t in tensors.values() if t.shape.rank), default=1)
        if enforce_limits and batch > self.limits.max_batch_size:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request holds {batch} inputs, over this server's limit of "
                f"{self.limits.max_batch_size} per request (cxr serve --max-batch-size); send "
                "fewer per request")
        undecodable = _undecodable_images(tensors)
        if undecodable:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               _rejection_text(tensors, undecodable))
        function = self._model.signatures[signature_name]
        try:
            outputs = function(**tensors)
        except tf.errors.InvalidArgumentError as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               self._name_rejected_inputs(function, tensors, batch, error)
                               ) from None
        except tf.errors.OpError as error:
            raise RequestError(_STATUS_BY_NUMBER[error.error_code],
                               _op_error_cause(error.message)) from None
        unknown = set(output_filter) - set(outputs)
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {sorted(unknown)}")
        return {name: outputs[name].numpy() for name in (output_filter or outputs)}

    @staticmethod
    def _name_rejected_inputs(function, tensors: Dict[str, tf.Tensor], batch: int,
                              error: tf.errors.OpError) -> str:
        """'image_bytes[3]: <cause>; ...' for each input the model rejects on its own."""
        if not all(t.shape.rank for t in tensors.values()):
            return _op_error_cause(error.message)
        if batch == 1:
            rejected = [(0, _op_error_cause(error.message))]
        else:
            rejected = []
            for index in range(batch):
                try:
                    function(**{name: t[index:index + 1] for name, t in tensors.items()})
                except tf.errors.InvalidArgumentError as single:
                    rejected.append((index, _op_error_cause(single.message)))
        if not rejected:  # only the combination failed
            return _op_error_cause(error.message)
        return _rejection_text(tensors, rejected)

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in self.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return signature_map

    def metadata(self, name: str, version: Optional[int], label: str = ""
                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        self.check_model_spec(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self.fill_model_spec(response.model_spec, "")
        response.metadata[SIGNATURE_DEF_FIELD].Pack(self.signature_def_map())
        return response

    def status(self, name: str, version: Optional[int], label: str = ""
               ) -> get_model_status_pb2.GetModelStatusResponse:
        """The one loaded version AVAILABLE, with TF Serving's NOT_FOUND texts otherwise."""
        if name != self.model_name or label:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {name}")
        if version not in (None, self.version):
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find version {version} of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        status.status.SetInParent()  # error_code OK, error_message ""
        return response

    def fill_model_spec(self, model_spec, signature_name: str) -> None:
        model_spec.name = self.model_name
        model_spec.version.value = self.version
        model_spec.signature_name = signature_name


def _spec_version(model_spec) -> Optional[int]:
    return model_spec.version.value if model_spec.HasField("version") else None


class LocalPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """gRPC Predict and GetModelMetadata over one Servable."""

    def __init__(self, servable: Servable):
        self.servable = servable

    def Predict(self, request: predict_pb2.PredictRequest,  # noqa: N802  (gRPC method name)
                context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        signature_name = spec.signature_name or features.SERVING_SIGNATURE
        try:
            self.servable.check_model_spec(spec.name, _spec_version(spec), spec.version_label)
            self.servable.input_specs(signature_name)
            inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
            outputs = self.servable.predict(signature_name, inputs, list(request.output_filter))
        except RequestError as error:
            context.abort(error.code, error.message)
        response = predict_pb2.PredictResponse()
        self.servable.fill_model_spec(response.model_spec, signature_name)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,  # noqa: N802
                         context: grpc.ServicerContext
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        spec = request.model_spec
        try:
            self.servable.check_model_spec(spec.name, _spec_version(spec), spec.version_label)
            if list(request.metadata_field) != [SIGNATURE_DEF_FIELD]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"metadata_field must be [{SIGNATURE_DEF_FIELD!r}], "
                                   f"got {list(request.metadata_field)}")
            return self.servable.metadata(spec.name, _spec_version(spec), spec.version_label)
        except RequestError as error:
            context.abort(error.code, error.message)


class LocalModelService(model_service_pb2_grpc.ModelServiceServicer):
    """gRPC GetModelStatus over one Servable (HandleReloadConfigRequest is not offered)."""

    def __init__(self, servable: Servable):
        self.servable = servable

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,  # noqa: N802
                       context: grpc.ServicerContext
                       ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        try:
            return self.servable.status(spec.name, _spec_version(spec), spec.version_label)
        except RequestError as error:
            context.abort(error.code, error.message)


@dataclasses.dataclass
class RunningServer:
    """What start_server started: stop() ends both front ends."""
    servable: Servable
    grpc_server: grpc.Server
    grpc_port: int
    rest_server: Optional[object] = None  # serving.rest_server.RestServer
    rest_port: Optional[int] = None

    def stop(self, grace: Optional[float] = None) -> None:
        if self.rest_server is not None:
            self.rest_server.stop()
        self.grpc_server.stop(grace).wait()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def _bind_grpc(servable: Servable, port: int, max_workers: int) -> Tuple[grpc.Server, int]:
    options = [("grpc.max_receive_message_length", servable.limits.max_request_bytes),
               ("grpc.max_send_message_length", -1)]
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                              options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        LocalPredictionService(servable), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(LocalModelService(servable),
                                                             grpc_server)
    try:
        bound_port = grpc_server.add_insecure_port(f"{LOOPBACK}:{port}")
    except RuntimeError as error:
        raise OSError(f"cannot listen on {LOOPBACK}:{port}: {error}") from None
    if bound_port == 0:
        raise OSError(f"cannot listen on {LOOPBACK}:{port} (is the port in use?)")
    return grpc_server, bound_port


def start_server(model_base_path: str, model_name: Optional[str] = None, port: int = 8500,
                 rest_port: Optional[int] = None, limits: Limits = Limits(),
                 max_workers: int = 16) -> RunningServer:
    """Load the newest version and serve it on loopback: gRPC on `port`, and TF Serving's REST
    API on `rest_port` when given. Port 0 picks a free port (see the returned ports).

    The model name defaults to the folder's name, as with TF Serving's model_base_path.
    """
    from serving import rest_server

    model_name = model_name or os.path.basename(os.path.normpath(model_base_path))
    servable = Servable(model_base_path, model_name, limits)
    grpc_server, bound_port = _bind_grpc(servable, port, max_workers)
    running = RunningServer(servable, grpc_server, bound_port)
    if rest_port is not None:
        try:
            running.rest_server = rest_server.RestServer(servable, LOOPBACK, rest_port)
        except OSError:
            grpc_server.stop(None)
            raise
        running.rest_port = running.rest_server.port
    grpc_server.start()
    if running.rest_server is not None:
        running.rest_server.start()
    return running

