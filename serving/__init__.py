"""Serving: a TF Serving gRPC and REST client, a local PredictionService, ONNX/TFLite exports.

Importing `models` first selects Keras 2 before TensorFlow is imported (see models/__init__).
"""
import models  # noqa: F401
