"""Custom TFX components, one folder each (component.py, executor.py, tests)."""
import models  # noqa: F401  (selects Keras 2 before TensorFlow loads)
