"""Custom artifact types must be importable by the name KFP v2 specs record."""
from tfx.orchestration.kubeflow.v2 import compiler_utils
from tfx.utils import import_utils

from components.grad_cam.component import GradCamReport
from components.model_card.component import ModelCard


def test_every_custom_artifact_type_imports_from_its_schema_title():
    for artifact_type in (ModelCard, GradCamReport):
        # The title written into a compiled spec, as TFX's container entrypoint reads it.
        schema = compiler_utils.get_artifact_schema(artifact_type)
        title = next(line.split(":", 1)[1].strip() for line in schema.splitlines()
                     if line.startswith("title:"))
        assert import_utils.import_class_by_path(title) is artifact_type
