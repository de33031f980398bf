"""The one image path: any input's bytes -> the encoded image ingestion stores (prepare.py).

Importing `models` first selects Keras 2 before TensorFlow is imported (see models/__init__).
"""
import models  # noqa: F401
