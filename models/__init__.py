"""Model code: feature contract, Transform and Trainer modules, model builders.

tf.Transform and TFMA 1.16 only work with Keras 2, so every process that imports this
package must select tf-keras before TensorFlow is first imported. Child processes (Beam
workers) inherit the variable from here.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if "tensorflow" in sys.modules and os.environ["TF_USE_LEGACY_KERAS"] != "1":
    raise ImportError("TF_USE_LEGACY_KERAS must be 1: tf.Transform and TFMA need Keras 2.")
