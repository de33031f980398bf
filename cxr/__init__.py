"""The `cxr` command line, and the namespace of the project's artifact types.

On Vertex AI (KFP v2) a custom artifact type's name is `namespace.Name` and TFX's container
entrypoint imports it as a class path: `cxr.ModelCard` must be importable from here. The
types load on first access, so `cxr` commands that do not need TFX do not import it.
"""
import models  # noqa: F401  (selects Keras 2 before TensorFlow loads)

ARTIFACT_TYPES = {"ModelCard": "components.model_card.component",
                  "GradCamReport": "components.grad_cam.component"}


def __getattr__(name: str):
    if name in ARTIFACT_TYPES:
        import importlib
        return getattr(importlib.import_module(ARTIFACT_TYPES[name]), name)
    raise AttributeError(f"module 'cxr' has no attribute {name!r}")
