"""The models behind the web demo: a pushed version loaded in this process, or a TF Serving
endpoint reached through the project's gRPC client, and Grad-CAM with the component's code.

Both predictors answer with serving.client.Prediction, so the page does not care which one
it talks to. Loading is slow (seconds), so the page creates each predictor once.
"""
import dataclasses
import os
from typing import Dict, Optional, Union

import numpy as np
import tensorflow as tf
from PIL import Image

from explain import figures, gradcam, gradcam_report
from models import features
from serving import client, server

OVERLAY_ALPHA = 0.4  # the GradCam component's default


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    directory: str


def _holds_versions(path: str) -> bool:
    return any(name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
               for name in os.listdir(path))


def resolve_model_dir(path: str, model_name: Optional[str] = None) -> ModelVersion:
    """The version to load from SERVING_DIR (holding one model, or `model_name`), from
    SERVING_DIR/<model_name> (its newest version, as TF Serving picks it) or from one version
    folder; server.ModelDirError says what is wrong otherwise."""
    path = os.path.normpath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return ModelVersion(os.path.basename(os.path.dirname(path)), os.path.basename(path), path)
    if not os.path.isdir(path):
        raise server.ModelDirError(f"model directory not found: {path}")
    if not _holds_versions(path):
        models = sorted(name for name in os.listdir(path)
                        if os.path.isdir(os.path.join(path, name))
                        and _holds_versions(os.path.join(path, name)))
        if model_name in models:
            path = os.path.join(path, model_name)
        elif len(models) == 1 and model_name is None:
            path = os.path.join(path, models[0])
        elif models:
            raise server.ModelDirError(
                f"{path} holds the models {', '.join(models)}: choose one with --model-name")
    version, directory = server.newest_version(path)
    return ModelVersion(os.path.basename(path), str(version), directory)


class LocalPredictor:
    """A pushed version in this process: its serving_default signature predicts (decoding
    included, exactly as TF Serving runs it) and its Keras model feeds Grad-CAM."""

    def __init__(self, model: ModelVersion):
        self.model = model
        self._saved_model = tf.saved_model.load(model.directory)  # owns the signature's variables
        self._serving = self._saved_model.signatures[features.SERVING_SIGNATURE]
        self.cam = gradcam.GradCam(gradcam_report.load_model(model.directory))

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
                   alpha: float = OVERLAY_ALPHA) -> Dict[str, Image.Image]:
    """Class name -> (model input | its Grad-CAM heatmap over it), every class in one batch."""
    image = gradcam_report.decode(image_bytes, cam.image_size)
    class_ids = list(range(features.NUM_CLASSES))
    explanation = cam.explain(np.repeat(image[np.newaxis], len(class_ids), axis=0), class_ids)
    return {features.CLASS_NAMES[i]: figures.overlay_panel(image, explanation.heatmaps[i], alpha)
            for i in class_ids}
