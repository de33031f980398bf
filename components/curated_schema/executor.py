"""Copies the curated schema into the pipeline, refusing a file that changed since compile."""
import hashlib
from typing import Any, Dict, List

import tensorflow as tf
from tfx import types
from tfx.components.schema_gen.import_schema_gen import executor as import_schema_executor
from tfx.types import standard_component_specs

SCHEMA_SHA256_KEY = "schema_sha256"


def file_sha256(path: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Executor(import_schema_executor.Executor):
    """ImportSchemaGen's executor behind a content check.

    The digest taken when the pipeline was built is part of the cache key; if the file read
    now differs (a Vertex AI image built from another checkout, an edit between compile and
    run), the run would validate against a schema nobody reviewed under that cache key.
    """

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        path = exec_properties[standard_component_specs.SCHEMA_FILE_KEY]
        expected = exec_properties[SCHEMA_SHA256_KEY]
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(
                f"schema file {path} has sha256 {actual[:12]}…, not {expected[:12]}… as when "
                "the pipeline was built: rebuild the pipeline (and the image) from one checkout")
        super().Do(input_dict, output_dict, exec_properties)
