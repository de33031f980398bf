"""The models behind the web demo: a pushed version loaded in this process, or a TF Serving
endpoint reached through the project's gRPC client, and Grad-CAM with explain/'s code.

Both predictors answer with serving.client.Prediction, so the page does not care which one
it talks to. Loading is slow (seconds), so the page creates each predictor once.
"""
from typing import Dict, Union

import numpy as np
import tensorflow as tf
from PIL import Image

from explain import figures, gradcam, gradcam_defaults, gradcam_report
from models import features
from serving import client, layout

class LocalPredictor:
    """A pushed version in this process: its serving_default signature predicts (decoding
    included, exactly as TF Serving runs it) and its Keras model feeds Grad-CAM."""

    def __init__(self, model: layout.ModelVersion):
        self.model = model
        self._saved_model = tf.saved_model.load(model.directory)  # owns the signature's variables
        self._serving = self._saved_model.signatures[features.SERVING_SIGNATURE]
        self.cam = gradcam.GradCam(layout.load_keras_model(model.directory))

    def predict(self, image_bytes: bytes) -> client.Prediction:
        outputs = self._serving(**{features.SERVING_INPUT: tf.constant([image_bytes])})
        return client.parse_outputs({name: value.numpy() for name, value in outputs.items()})[0]


class RemotePredictor:
    """A model served by TF Serving (or `cxr serve`) over gRPC."""

    def __init__(self, target: str, model_name: str):
        self.target = target
        self.model_name = model_name
        self._client = client.PredictionClient(target, model_name)

    def check(self) -> None:
        """ServingError unless the endpoint serves a signature this app can use."""
        self._client.signature()

    def predict(self, image_bytes: bytes) -> client.Prediction:
        return self._client.predict([image_bytes])[0]


Predictor = Union[LocalPredictor, RemotePredictor]


def class_overlays(cam: gradcam.GradCam, image_bytes: bytes,
                   alpha: float = gradcam_defaults.OVERLAY_ALPHA) -> Dict[str, Image.Image]:
    """Class name -> (model input | its Grad-CAM heatmap over it), every class in one batch."""
    image = gradcam_report.decode(image_bytes, cam.image_size)
    class_ids = list(range(features.NUM_CLASSES))
    explanation = cam.explain(np.repeat(image[np.newaxis], len(class_ids), axis=0), class_ids)
    return {features.CLASS_NAMES[i]: figures.overlay_panel(image, explanation.heatmaps[i], alpha)
            for i in class_ids}
