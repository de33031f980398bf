"""A development stand-in for TensorFlow Serving's gRPC PredictionService.

It serves the newest version under a model base path (the Pusher's layout, what TF Serving's
MODEL_BASE_PATH points at) through the same protobufs, signature names and tensor names, so
a client written against it works unchanged against the real server. Only Predict and
GetModelMetadata are implemented; it is for development and tests, not for production.
"""
import os
from concurrent import futures
from typing import Dict, Optional, Tuple

import grpc
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from models import features

SIGNATURE_DEF_FIELD = "signature_def"
LOOPBACK = "127.0.0.1"
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ModelDirError(ValueError):
    """The model base path holds no servable version."""


def newest_version(model_base_path: str) -> Tuple[int, str]:
    """(version, directory) of the highest numbered SavedModel folder, as TF Serving picks it."""
    if not os.path.isdir(model_base_path):
        raise ModelDirError(f"model directory not found: {model_base_path}")
    if os.path.isfile(os.path.join(model_base_path, "saved_model.pb")):
        raise ModelDirError(
            f"{model_base_path} is a single version; point at the folder that holds the "
            f"numbered versions ({os.path.dirname(os.path.abspath(model_base_path))})")
    versions = [int(name) for name in os.listdir(model_base_path) if name.isdigit()
                and os.path.isfile(os.path.join(model_base_path, name, "saved_model.pb"))]
    if not versions:
        raise ModelDirError(f"no numbered SavedModel versions in {model_base_path}")
    version = max(versions)
    return version, os.path.join(model_base_path, str(version))


def _signature_defs(version_dir: str) -> Dict[str, "tf.compat.v1.SignatureDef"]:
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return dict(saved_model.meta_graphs[0].signature_def)


def _servable_request_text(model_spec) -> str:
    """How TF Serving names a servable request in its NOT_FOUND messages."""
    if model_spec.HasField("version"):
        return f"Specific({model_spec.name}, {model_spec.version.value})"
    if model_spec.version_label:
        return f"Label({model_spec.name}, {model_spec.version_label})"
    return f"Latest({model_spec.name})"


def _op_error_cause(message: str) -> str:
    """The line of a TF op error that says what went wrong, without graph boilerplate."""
    boilerplate = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(boilerplate):
            return line.split(" [[", 1)[0]
    return "the model failed on this input"


class LocalPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over one loaded SavedModel version."""

    def __init__(self, model_base_path: str, model_name: str):
        self.model_name = model_name
        self.version, self.version_dir = newest_version(model_base_path)
        self._model = tf.saved_model.load(self.version_dir)
        self._signature_defs = _signature_defs(self.version_dir)

    def _check_model_spec(self, model_spec, context: grpc.ServicerContext) -> None:
        known = (model_spec.name == self.model_name and not model_spec.version_label
                 and (not model_spec.HasField("version")
                      or model_spec.version.value == self.version))
        if not known:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found for request: "
                          + _servable_request_text(model_spec))

    def _fill_model_spec(self, model_spec, signature_name: str) -> None:
        model_spec.name = self.model_name
        model_spec.version.value = self.version
        model_spec.signature_name = signature_name

    def Predict(self, request: predict_pb2.PredictRequest,  # noqa: N802  (gRPC method name)
                context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        self._check_model_spec(request.model_spec, context)
        signature_name = request.model_spec.signature_name or features.SERVING_SIGNATURE
        if signature_name not in self._model.signatures:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f'Serving signature key "{signature_name}" not found.')
        function = self._model.signatures[signature_name]
        input_specs = function.structured_input_signature[1]
        if set(request.inputs) != set(input_specs):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"inputs {sorted(request.inputs)} do not match signature "
                          f"{signature_name!r}, which takes {sorted(input_specs)}")
        try:
            inputs = {name: tf.constant(tf.make_ndarray(request.inputs[name]), spec.dtype)
                      for name, spec in input_specs.items()}
            outputs = function(**inputs)
        except tf.errors.OpError as error:
            context.abort(_STATUS_BY_NUMBER[error.error_code], _op_error_cause(error.message))
        except (TypeError, ValueError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0])
        unknown = set(request.output_filter) - set(outputs)
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"output tensor alias not found in signature: {sorted(unknown)}")
        response = predict_pb2.PredictResponse()
        self._fill_model_spec(response.model_spec, signature_name)
        for name in request.output_filter or outputs:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name].numpy()))
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,  # noqa: N802
                         context: grpc.ServicerContext
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        self._check_model_spec(request.model_spec, context)
        if list(request.metadata_field) != [SIGNATURE_DEF_FIELD]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"metadata_field must be [{SIGNATURE_DEF_FIELD!r}], "
                          f"got {list(request.metadata_field)}")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in self._signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_model_spec(response.model_spec, "")
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


def start_server(model_base_path: str, model_name: Optional[str] = None, port: int = 8500,
                 max_workers: int = 4) -> Tuple[grpc.Server, LocalPredictionService, int]:
    """Load the newest version and serve it on loopback; port 0 picks a free port.

    The model name defaults to the folder's name, as with TF Serving's model_base_path.
    Returns the started server, its service and the bound port.
    """
    model_name = model_name or os.path.basename(os.path.normpath(model_base_path))
    service = LocalPredictionService(model_base_path, model_name)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    try:
        bound_port = server.add_insecure_port(f"{LOOPBACK}:{port}")
    except RuntimeError as error:
        raise OSError(f"cannot listen on {LOOPBACK}:{port}: {error}") from None
    if bound_port == 0:
        raise OSError(f"cannot listen on {LOOPBACK}:{port} (is the port in use?)")
    server.start()
    return server, service, bound_port
