"""Engines that run the pipeline built by create_pipeline; they only choose where it runs."""
import dataclasses
import json
import os
import re
from typing import Callable, Dict, List, Optional

from tfx import v1 as tfx

from components.curated_schema.executor import file_sha256
from pipeline import progress
from pipeline.config import IMAGE_SCHEMA_FILE, PipelineConfig
from pipeline.pipeline import create_pipeline, run_time_settings
from schemas import SCHEMA_FILE

KFP_PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


def run_local(config: PipelineConfig, report: Optional[Callable[[str], None]] = None,
              verbose: bool = False) -> List[progress.Step]:
    """Run with LocalDagRunner and Beam's DirectRunner; MLMD caching reuses finished steps.

    report: called with a line as each component starts and ends (pipeline/progress.py);
    the steps are returned for the summary table. verbose keeps TFX's own logs visible.
    """
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    pipeline = create_pipeline(config)
    if report is None:
        tfx.orchestration.LocalDagRunner().run(pipeline)
        return []
    with progress.RunProgress(config, len(pipeline.components), verbose, report) as watcher:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return watcher.steps


def compile_vertex(config: PipelineConfig, output_file: str) -> None:
    """Write a Kubeflow Pipelines v2 spec for Vertex AI Pipelines, every step in config.image.

    Works offline: components name their code by module path (no module_file), so nothing is
    packaged into or probed at the pipeline root. The schema is read from the image's copy.
    """
    if not config.image:
        raise ValueError("compiling for Vertex AI needs the pipeline image: pass --image "
                         "or set CXR_IMAGE")
    if not KFP_PIPELINE_NAME.fullmatch(config.pipeline_name):
        raise ValueError(f"pipeline name {config.pipeline_name!r} is not valid on Vertex AI: "
                         "use lower-case letters, digits and dashes")
    in_image = dataclasses.replace(config, schema_file=(
        IMAGE_SCHEMA_FILE if config.schema_file == SCHEMA_FILE else config.schema_file))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=config.image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file))
    # Runtime parameters (data folder, epochs, blessing thresholds) default to the config's
    # values; `cxr submit --param NAME=VALUE` overrides them for one run.
    runner.run(create_pipeline(in_image, schema_sha256=file_sha256(config.schema_file),
                               runtime_parameters=True),
               parameter_values=run_time_settings(config))


def submit_vertex(pipeline_file: str, project: str, region: str,
                  service_account: Optional[str] = None, enable_caching: bool = True,
                  parameters: Optional[Dict[str, str]] = None) -> str:
    """Submit a compiled spec as a Vertex AI PipelineJob; returns the job's resource name.

    parameters: runtime parameter values by name (`--param NAME=VALUE`), converted to the
    types the spec declares; the others keep the values compiled into the spec.

    On Vertex AI, ImageExampleGen's cache key comes from TFX's generic driver, which sees only
    the data folder's top level: enable_caching=False forces a fresh run after images changed.
    """
    from google.cloud import aiplatform

    from pipeline import spec_runner  # needs kfp (the "vertex" extra)

    with open(pipeline_file, encoding="utf-8") as f:
        job_spec = json.load(f)
    pipeline_root = job_spec.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
    if not pipeline_root.startswith("gs://"):
        raise ValueError(f"the spec's pipeline root {pipeline_root!r} is not on Cloud Storage; "
                         "recompile with --pipeline-root gs://BUCKET/...")
    values = spec_runner.parameter_values(job_spec, parameters or {})
    job = aiplatform.PipelineJob(
        display_name=job_spec.get("displayName") or "cxr", template_path=pipeline_file,
        project=project, location=region, enable_caching=enable_caching,
        parameter_values={k: v for k, v in values.items() if k in (parameters or {})})
    job.submit(service_account=service_account)
    return job.resource_name
