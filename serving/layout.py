"""The serving folder layout, in one place.

TF Serving reads a model base path SERVING_DIR/<model_name>/ holding numbered version
folders, each one SavedModel (saved_model.pb + variables/), and serves the highest number.
The Pusher writes that layout; `cxr serve`, the app, `cxr predict`, `cxr gradcam`,
`cxr export` and the model card read it. A Trainer's model artifact holds its SavedModel in
Format-Serving/. Everything here goes through tf.io.gfile, so paths may be gs://.
"""
import dataclasses
import os
import time
from typing import List, Optional, Tuple

import tensorflow as tf

SAVED_MODEL_FILE = "saved_model.pb"
# The folder TFX's Trainer exports its serving model to, inside the Model artifact.
TRAINER_EXPORT_DIR = "Format-Serving"


class ModelDirError(ValueError):
    """A path that holds no model in the layout asked for; the message says what it holds."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One servable version: SERVING_DIR/<name>/<version> = directory."""
    name: str
    version: str
    directory: str


def holds_saved_model(path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE))


def _entries(path: str) -> List[str]:
    return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]


def versions(model_base_path: str) -> List[int]:
    """The numbered folders under a model base path that hold a SavedModel, ascending."""
    if not tf.io.gfile.isdir(model_base_path):
        return []
    return sorted(int(name) for name in _entries(model_base_path) if name.isdigit()
                  and holds_saved_model(os.path.join(model_base_path, name)))


def newest_version(model_base_path: str) -> Tuple[int, str]:
    """(version, directory) of the highest numbered SavedModel folder, as TF Serving picks it."""
    if not tf.io.gfile.isdir(model_base_path):
        raise ModelDirError(f"model directory not found: {model_base_path}")
    if holds_saved_model(model_base_path):
        parent = (model_base_path.rstrip("/").rpartition("/")[0] if "://" in model_base_path
                  else os.path.dirname(os.path.abspath(model_base_path)))
        raise ModelDirError(
            f"{model_base_path} is a single version; point at the folder that holds the "
            f"numbered versions ({parent})")
    numbers = versions(model_base_path)
    if not numbers:
        raise ModelDirError(f"no numbered SavedModel versions in {model_base_path}")
    return numbers[-1], os.path.join(model_base_path, str(numbers[-1]))


def next_version(model_base_path: str) -> str:
    """A Unix-time version newer than every numbered folder already under the base path
    (complete or not: a staging leftover must not be overwritten)."""
    existing = ([int(name) for name in _entries(model_base_path) if name.isdigit()]
                if tf.io.gfile.isdir(model_base_path) else [])
    return str(max([int(time.time())] + [v + 1 for v in existing]))


def version_dir(serving_dir: str, model_name: str, version: str) -> str:
    return os.path.join(serving_dir, model_name, str(version))


def find_saved_model(path: str) -> str:
    """The SavedModel folder that `path` names: a version folder, a Trainer model artifact
    (its Format-Serving/) or a model base path (its newest version)."""
    if holds_saved_model(path):
        return path
    if holds_saved_model(os.path.join(path, TRAINER_EXPORT_DIR)):
        return os.path.join(path, TRAINER_EXPORT_DIR)
    if versions(path):
        return newest_version(path)[1]
    raise ModelDirError(f"no SavedModel in {path} (expected {SAVED_MODEL_FILE}, "
                        f"{TRAINER_EXPORT_DIR}/ or numbered version folders)")


def resolve(path: str, model_name: Optional[str] = None) -> ModelVersion:
    """The version to load from a serving dir (holding one model, or `model_name`), from a
    model base path (its newest version) or from one version folder."""
    path = path.rstrip("/") if "://" in path else os.path.normpath(path)
    if holds_saved_model(path):
        return ModelVersion(os.path.basename(os.path.dirname(path)), os.path.basename(path), path)
    if not tf.io.gfile.isdir(path):
        raise ModelDirError(f"model directory not found: {path}")
    if not versions(path):
        models = sorted(name for name in _entries(path) if versions(os.path.join(path, name)))
        if model_name in models:
            path = os.path.join(path, model_name)
        elif len(models) == 1 and model_name is None:
            path = os.path.join(path, models[0])
        elif models:
            raise ModelDirError(
                f"{path} holds the models {', '.join(models)}: choose one with --model-name")
    version, directory = newest_version(path)
    return ModelVersion(os.path.basename(path), str(version), directory)


def load_keras_model(path: str) -> tf.keras.Model:
    """The Keras model (with its layers, for Grad-CAM and the exports) inside the SavedModel
    that `path` names (see find_saved_model)."""
    directory = find_saved_model(path)
    try:
        model = tf.keras.models.load_model(directory, compile=False)
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise ModelDirError(f"{directory} holds no Keras model: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                            ) from None
    if not isinstance(model, tf.keras.Model):  # a SavedModel of a plain tf.Module loads too
        raise ModelDirError(f"{directory} holds no Keras model: it was saved without Keras "
                            "(tf.saved_model.save); export it with model.save()")
    return model
