"""Grad-CAM heatmaps, their faithfulness checks, and the report that shows them.

Importing `models` first selects Keras 2 before TensorFlow is imported (see models/__init__).
"""
import models  # noqa: F401
