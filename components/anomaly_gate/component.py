"""AnomalyGate: stops the pipeline before Transform/Trainer when the data has anomalies.

Standard TFX components never read ExampleValidator's output, so anomalies alone do not
stop a run. Downstream components are made to depend on this gate (add_upstream_node).
"""
from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.anomaly_gate import executor


class AnomalyGateSpec(ComponentSpec):
    PARAMETERS = {}
    INPUTS = {executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}
    OUTPUTS = {}


class AnomalyGate(base_component.BaseComponent):
    SPEC_CLASS = AnomalyGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: types.BaseChannel):
        super().__init__(spec=AnomalyGateSpec(anomalies=anomalies))
