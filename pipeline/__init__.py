"""Builds and runs the TFX pipeline."""
import models  # noqa: F401  (selects Keras 2 before TensorFlow loads)
