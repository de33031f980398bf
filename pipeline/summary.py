"""What a finished run produced, read back from ML Metadata and TFMA's output."""
import dataclasses
import math
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from evaluation import metrics, render
from explain import gradcam_report
from imaging import quarantine
from models import features
from pipeline.config import PipelineConfig

CACHED = metadata_store_pb2.Execution.CACHED
COMPLETE = metadata_store_pb2.Execution.COMPLETE


@dataclasses.dataclass
class RunSummary:
    execution_states: Dict[str, int]
    evaluation_uri: Optional[str]
    blessed: Optional[bool]
    pushed_model_dir: Optional[str]
    model_run_dir: Optional[str]
    class_metrics: Dict[str, Dict[str, float]]
    overall_metrics: Dict[str, float]
    model_card_dir: Optional[str] = None
    examples_uri: Optional[str] = None
    model_uri: Optional[str] = None
    gradcam_report_dir: Optional[str] = None
    ingestion: Optional[quarantine.IngestionReport] = None  # ImageExampleGen's report
    ingestion_report_path: Optional[str] = None
    blessing_failures: List[str] = dataclasses.field(default_factory=list)


def _store(config: PipelineConfig) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))


def _latest_run_outputs(store: metadata_store.MetadataStore):
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError("no pipeline run recorded in ML Metadata")
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(run.id)
    node_type = store.get_context_type("node").id
    states = {}
    for execution in executions:
        node = next(c for c in store.get_contexts_by_execution(execution.id)
                    if c.type_id == node_type)
        states[node.name.split(".", 1)[1]] = execution.last_known_state
    output_ids = [e.artifact_id for e in store.get_events_by_execution_ids(
        [e.id for e in executions]) if e.type == metadata_store_pb2.Event.OUTPUT]
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    by_type = {}
    for artifact in sorted(store.get_artifacts_by_id(output_ids), key=lambda a: a.id):
        by_type[artifact_types[artifact.type_id]] = artifact
    return states, by_type


def _metric_name(key) -> str:
    name = {"recall": "recall", "auc": "ROC-AUC"}.get(key.name, key.name)
    if key.sub_key.HasField("class_id"):
        name = f"{features.CLASS_NAMES[key.sub_key.class_id.value]} {name}"
    if key.HasField("aggregation_type"):
        name = f"macro {name}"
    return name


def blessing_failures(evaluation_uri: str) -> List[str]:
    """Why the Evaluator did not bless the model, one line per failed threshold."""
    result = tfma.load_validation_result(evaluation_uri)
    if result.validation_ok:
        return []
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if failure.metric_key.is_diff:
                reasons.append(
                    f"{_metric_name(failure.metric_key)} fell by {-value:.3f} against the last "
                    f"blessed model (allowed: "
                    f"{-threshold.change_threshold.absolute.value - 1e-10:.3f})")
            else:
                reasons.append(
                    f"{_metric_name(failure.metric_key)} {value:.3f} is below "
                    f"{threshold.value_threshold.lower_bound.value:g}")
    if result.missing_slices or result.missing_thresholds:
        reasons.append("a metric with a threshold had no value (an empty test split?)")
    return reasons or ["TFMA's validation failed (see validations.tfrecord)"]


def summarize(config: PipelineConfig) -> RunSummary:
    states, outputs = _latest_run_outputs(_store(config))
    evaluation = outputs.get("ModelEvaluation")
    blessing = outputs.get("ModelBlessing")
    pushed = outputs.get("PushedModel")
    pushed_dir = None
    if pushed and pushed.custom_properties["pushed"].int_value:
        pushed_dir = pushed.custom_properties["pushed_destination"].string_value
    per_class, overall = metrics.load_tfma_metrics(evaluation.uri) if evaluation else ({}, {})
    examples = outputs.get("Examples")
    report_path = os.path.join(examples.uri, quarantine.REPORT_NAME) if examples else None
    return RunSummary(
        execution_states=states,
        evaluation_uri=evaluation.uri if evaluation else None,
        blessed=bool(blessing.custom_properties["blessed"].int_value) if blessing else None,
        pushed_model_dir=pushed_dir,
        model_run_dir=outputs["ModelRun"].uri if "ModelRun" in outputs else None,
        class_metrics=per_class,
        overall_metrics=overall,
        examples_uri=outputs["Examples"].uri if "Examples" in outputs else None,
        model_uri=outputs["Model"].uri if "Model" in outputs else None,
        model_card_dir=outputs["cxr.ModelCard"].uri if "cxr.ModelCard" in outputs else None,
        gradcam_report_dir=(outputs["cxr.GradCamReport"].uri
                            if "cxr.GradCamReport" in outputs else None),
        ingestion=quarantine.load(report_path) if report_path and tf.io.gfile.exists(
            report_path) else None,
        ingestion_report_path=report_path,
        blessing_failures=blessing_failures(evaluation.uri) if evaluation else [])


def _fmt(value: Optional[float]) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{value:5.3f}"


def format_summary(summary: RunSummary, config: PipelineConfig) -> List[str]:
    lines = []
    if summary.ingestion:
        lines += summary.ingestion.summary_lines()
        lines.append(f"  quarantine report: {summary.ingestion_report_path}")
    lines += ["Test split, per class:",
             f"  {'class':<10} {'precision':>9} {'recall':>9} {'F1':>9} {'ROC-AUC':>9}"]
    for name, values in summary.class_metrics.items():
        lines.append(f"  {name:<10} " + " ".join(
            f"{_fmt(values.get(k)):>9}" for k in ("precision", "recall", "f1_score", "auc")))
    overall = summary.overall_metrics
    lines.append(f"  accuracy {_fmt(overall.get('sparse_categorical_accuracy'))}, macro ROC-AUC "
                 f"{_fmt(overall.get('macro_auc'))}, test examples "
                 f"{int(overall.get('example_count', 0))}")
    verdict = {True: "BLESSED", False: "NOT blessed", None: "not evaluated"}[summary.blessed]
    lines.append(f"Model {verdict} ({config.blessing_rule})")
    lines += [f"  not blessed because {reason}" for reason in summary.blessing_failures]
    lines.append(f"Pushed model: {summary.pushed_model_dir or 'none (only blessed models are pushed)'}")
    lines.append(f"Evaluation (TFMA, sliced by label/source/age_group): {summary.evaluation_uri}")
    if summary.model_card_dir:
        lines.append(f"Model card: {os.path.join(summary.model_card_dir, render.HTML_FILE)}")
    if summary.gradcam_report_dir:
        report = os.path.join(summary.gradcam_report_dir, gradcam_report.REPORT_FILE)
        lines.append(f"Grad-CAM report: {report}")
    lines.append(f"TensorBoard logs: tensorboard --logdir {summary.model_run_dir}")
    cached = sorted(n for n, s in summary.execution_states.items() if s == CACHED)
    if cached:
        lines.append(f"Reused from cache: {', '.join(cached)}")
    return lines
