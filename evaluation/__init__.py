"""Test-split metrics with confidence intervals, the data's bias tables, blessing thresholds
and the model card's documents: shared by ModelCardGenerator, the Pusher, `cxr compare`
and the run summary.

Importing `models` first selects Keras 2 before TensorFlow is imported (see models/__init__).
"""
import models  # noqa: F401
