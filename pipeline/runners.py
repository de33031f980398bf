"""Engines that run the pipeline built by create_pipeline."""
import os

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def run_local(config: PipelineConfig) -> None:
    """Run with LocalDagRunner and Beam's DirectRunner; MLMD caching reuses finished steps."""
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
