import os

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.types import standard_artifacts

from components.anomaly_gate import executor
from schemas import SCHEMA_FILE


def _statistics(labels):
    """Statistics of a label column, computed by TFDV from real values."""
    import pandas as pd
    return tfdv.generate_statistics_from_dataframe(pd.DataFrame({"label": labels}))


def _anomalies_artifact(folder, stats: statistics_pb2.DatasetFeatureStatisticsList):
    """ExampleValidator's output for one split, in `folder` (local or gs://)."""
    schema = tfdv.load_schema_text(SCHEMA_FILE)
    label_only = type(schema)()
    label_only.CopyFrom(schema)
    del label_only.feature[:]
    label_only.feature.add().CopyFrom(next(f for f in schema.feature if f.name == "label"))
    anomalies = tfdv.validate_statistics(stats, label_only)
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(folder)
    artifact.split_names = '["train"]'
    tf.io.gfile.makedirs(os.path.join(artifact.uri, "Split-train"))
    with tf.io.gfile.GFile(os.path.join(artifact.uri, "Split-train", DEFAULT_FILE_NAME),
                           "wb") as f:
        f.write(anomalies.SerializeToString())
    return artifact


def test_gate_stops_on_unknown_label_and_names_it(tmp_path):
    artifact = _anomalies_artifact(tmp_path, _statistics(["COVID-19", "Normal", "Lung_Opacity"]))
    with pytest.raises(executor.DataAnomaliesError, match=r"train/label: .*Lung_Opacity"):
        executor.Executor().Do({executor.ANOMALIES_KEY: [artifact]}, {}, {})


def test_gate_passes_clean_data(tmp_path):
    artifact = _anomalies_artifact(tmp_path, _statistics(["COVID-19", "Normal", "Pneumonia"]))
    assert executor.describe_anomalies(artifact) == []
    executor.Executor().Do({executor.ANOMALIES_KEY: [artifact]}, {}, {})


def test_gate_reads_anomalies_from_cloud_storage(gcs_dir):
    artifact = _anomalies_artifact(gcs_dir, _statistics(["COVID-19", "Normal", "Lung_Opacity"]))
    with pytest.raises(executor.DataAnomaliesError, match=r"train/label: .*Lung_Opacity"):
        executor.Executor().Do({executor.ANOMALIES_KEY: [artifact]}, {}, {})
