"""CuratedSchemaImporter: TFX's ImportSchemaGen with the schema's content in its cache key.

ImportSchemaGen's only parameter is the schema's path, so TFX reuses its cached output after
the curated schema is edited, and ExampleValidator keeps checking the data against the old
one. Here the file's sha256 is a parameter too: an edit re-runs validation and everything
after it. (The path stays a parameter, so another checkout's copy is still a cache miss.)
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.curated_schema import executor


class CuratedSchemaImporterSpec(ComponentSpec):
    PARAMETERS = {standard_component_specs.SCHEMA_FILE_KEY: ExecutionParameter(type=str),
                  executor.SCHEMA_SHA256_KEY: ExecutionParameter(type=str)}
    INPUTS = {}
    OUTPUTS = {standard_component_specs.SCHEMA_KEY:
               ChannelParameter(type=standard_artifacts.Schema)}


class CuratedSchemaImporter(base_component.BaseComponent):
    SPEC_CLASS = CuratedSchemaImporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, schema_file: str, schema_sha256: Optional[str] = None):
        """schema_sha256 defaults to the file's digest now; pass it when the path given is
        where the file will be at run time (a container image), not where it is readable."""
        super().__init__(spec=CuratedSchemaImporterSpec(
            schema_file=schema_file,
            schema_sha256=schema_sha256 or executor.file_sha256(schema_file),
            schema=types.Channel(type=standard_artifacts.Schema)))
