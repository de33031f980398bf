"""Fails the run when ExampleValidator found anomalies, naming each one."""
import os
from typing import Any, Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

ANOMALIES_KEY = "anomalies"


class DataAnomaliesError(RuntimeError):
    """The examples broke the curated schema; training on them would hide the problem."""


def describe_anomalies(anomalies_artifact: types.Artifact) -> List[str]:
    """One line per anomalous feature and split: 'split/feature: what is wrong'."""
    problems = []
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies_artifact], split),
                            DEFAULT_FILE_NAME)
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(io_utils.read_bytes_file(path))
        for feature, info in sorted(anomalies.anomaly_info.items()):
            detail = "; ".join(reason.description for reason in info.reason) or info.description
            problems.append(f"{split}/{feature}: {detail}")
        if anomalies.HasField("dataset_anomaly_info"):
            problems.append(f"{split}: {anomalies.dataset_anomaly_info.description}")
    return problems


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        problems = describe_anomalies(artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY]))
        if problems:
            raise DataAnomaliesError(
                "data anomalies, fix the data or the schema before training: "
                + " | ".join(problems))
