"""What `cxr run` prints while the pipeline runs: each component as it starts and ends.

LocalDagRunner runs the components one after the other and logs 'Component X is running.'
and 'Component X is finished.' through absl; RunProgress listens for those two records (with
the rest of the library logs hidden unless --verbose) and, when a component ends, reads its
execution and outputs from ML Metadata to print its duration and one key figure. At the end
summary_lines() gives the table of every component.
"""
import dataclasses
import json
import logging
import os
import time
from typing import Callable, Dict, List

from pipeline.config import PipelineConfig

_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."


@dataclasses.dataclass
class Step:
    node: str
    seconds: float = 0.0
    status: str = "running"   # running, ran, cached, failed
    figure: str = ""


def _node_state(config: PipelineConfig, node: str):
    """(execution state name, {artifact type name: artifact}) of the node's latest execution."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))
    context = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{node}")
    executions = store.get_executions_by_context(context.id) if context else []
    if not executions:
        return None, {}
    execution = max(executions, key=lambda e: e.id)
    # A resolver records what it found as INTERNAL_OUTPUT events.
    output_types = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.INTERNAL_OUTPUT)
    output_ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                  if e.type in output_types]
    types = {t.id: t.name for t in store.get_artifact_types()}
    outputs = {types[a.type_id]: a for a in store.get_artifacts_by_id(output_ids)}
    state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
    return state, outputs


def _training_figure(model_uri: str) -> str:
    """The kept epoch's eval loss, from the summary the Trainer saves beside the model."""
    from models import assets_extra
    from serving import layout

    summary = assets_extra.read_training_summary(layout.find_saved_model(model_uri))
    if summary is None:
        return ""
    best = summary["best_epoch"]
    return (f"eval loss {summary['eval_loss_per_epoch'][best - 1]:.3f} "
            f"(epoch {best} of {summary['epochs_run']} kept)")


def key_figure(node: str, outputs: Dict[str, object]) -> str:
    """One number that says what the component produced, from its output artifacts."""
    if node == "latest_blessed_model_resolver":
        return ("baseline: the last blessed model" if "Model" in outputs
                else "no blessed model yet: no baseline")
    if "Examples" in outputs and node == "ImageExampleGen":
        from imaging import quarantine

        report = quarantine.load(os.path.join(outputs["Examples"].uri, quarantine.REPORT_NAME))
        return (f"{sum(report.accepted_per_class.values())} examples written, "
                f"{len(report.quarantined)} files quarantined")
    if "ExampleAnomalies" in outputs:
        from tfx.types import standard_artifacts

        from components.anomaly_gate.executor import describe_anomalies

        anomalies = standard_artifacts.ExampleAnomalies()
        anomalies.set_mlmd_artifact(outputs["ExampleAnomalies"])
        problems = describe_anomalies(anomalies)
        return f"{len(problems)} anomalies" if problems else "no anomalies"
    if "ModelRun" in outputs:
        return _training_figure(outputs["Model"].uri)
    if "ModelBlessing" in outputs:
        from evaluation import metrics

        blessed = outputs["ModelBlessing"].custom_properties["blessed"].int_value
        _, overall = metrics.load_tfma_metrics(outputs["ModelEvaluation"].uri)
        accuracy = overall.get("sparse_categorical_accuracy")
        return ("blessed" if blessed else "NOT blessed") + (
            f", test accuracy {accuracy:.3f}" if accuracy is not None else "")
    if "cxr.GradCamReport" in outputs:
        report = outputs["cxr.GradCamReport"]
        return f"{report.custom_properties['images'].int_value} images explained"
    if "cxr.ModelCard" in outputs:
        from evaluation import render

        with open(os.path.join(outputs["cxr.ModelCard"].uri, render.JSON_FILE)) as f:
            accuracy = json.load(f)["test_metrics"]["accuracy"]
        low, high = accuracy["ci95"]
        return (f"test accuracy {accuracy['value']:.3f}"
                + (f" (95% CI {low:.3f}-{high:.3f})" if low is not None else ""))
    if "PushedModel" in outputs:
        pushed = outputs["PushedModel"].custom_properties
        if pushed["pushed"].int_value:
            return f"pushed version {pushed['pushed_version'].string_value}"
        return "not pushed (model not blessed)"
    if "HyperParameters" in outputs:
        return "best hyperparameters chosen on the eval split"
    if "Schema" in outputs:
        return "curated schema (schemas/schema.pbtxt)"
    if "ExampleStatistics" in outputs:
        return "statistics of every split"
    if "TransformGraph" in outputs:
        return "transform graph written (examples are transformed on the fly)"
    if node == "AnomalyGate":
        return "passed"
    return ""


class RunProgress(logging.Handler):
    """Prints a line when each component starts and ends; keeps the steps for the table.

    Use as a context manager around the runner. verbose=False hides every other absl
    record (TFX's own logging), as `cxr run` did before.
    """

    def __init__(self, config: PipelineConfig, total: int, verbose: bool = False,
                 write: Callable[[str], None] = print):
        super().__init__(level=logging.INFO)
        self.config, self.total, self.verbose, self._write = config, total, verbose, write
        self.steps: List[Step] = []
        self._started = 0.0
        self._saved = None

    def __enter__(self) -> "RunProgress":
        from absl import logging as absl_logging

        absl = logging.getLogger("absl")
        self._saved = (absl_logging.get_verbosity(), absl.propagate)
        # Through absl's verbosity flag, not the logger's level: libraries that parse absl
        # flags during the run (Transform does) re-apply the flag to the logger.
        absl_logging.set_verbosity(absl_logging.INFO)
        absl.propagate = self.verbose  # TFX's logs reach the terminal only with --verbose
        absl.addHandler(self)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        from absl import logging as absl_logging

        absl = logging.getLogger("absl")
        absl.removeHandler(self)
        absl_logging.set_verbosity(self._saved[0])
        absl.propagate = self._saved[1]
        if exc_type is not None and self.steps and self.steps[-1].status == "running":
            step = self.steps[-1]
            step.status, step.seconds = "failed", time.monotonic() - self._started
            self._write(f"{self._prefix()} {step.node} failed after {step.seconds:.1f} s")

    def _prefix(self) -> str:
        return f"[{len(self.steps):>2}/{self.total}]"

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _RUNNING and record.args:
            self.steps.append(Step(str(record.args[0])))
            self._started = time.monotonic()
            self._write(f"{self._prefix()} {self.steps[-1].node} ...")
        elif record.msg == _FINISHED and record.args and self.steps:
            step = self.steps[-1]
            step.seconds = time.monotonic() - self._started
            try:
                state, outputs = _node_state(self.config, step.node)
                step.status = {"CACHED": "cached"}.get(state, "ran")
                step.figure = key_figure(step.node, outputs) if state in (
                    "COMPLETE", "CACHED") else ""
            except Exception as error:  # noqa: BLE001  a progress line never stops a run
                step.status, step.figure = "ran", f"(no figure: {type(error).__name__})"
            done = "reused from cache" if step.status == "cached" else "done"
            self._write(f"{self._prefix()} {step.node} {done} in {step.seconds:.1f} s"
                        + (f": {step.figure}" if step.figure else ""))


def summary_lines(steps: List[Step]) -> List[str]:
    """The table printed after the run: component, status, seconds, key figure."""
    if not steps:
        return []
    width = max(len(s.node) for s in steps)
    lines = [f"{'component':<{width}}  {'status':<7} {'time (s)':>8}  result"]
    lines += [f"{s.node:<{width}}  {s.status:<7} {s.seconds:>8.1f}  {s.figure}" for s in steps]
    lines.append(f"{'total':<{width}}  {'':<7} {sum(s.seconds for s in steps):>8.1f}")
    return lines
