"""ServingPusher executor: TFX's Pusher, made atomic, with the model card in the version.

TF Serving polls the base directory and loads any new numbered folder. TFX's own Pusher
copies files straight into `<base>/<version>/`, so a poll during the copy can see a
half-written model. Here the version is assembled in a hidden staging folder (TF Serving
ignores names that are not numbers) and renamed into place in one step; a failed push
removes the staging folder and leaves the versions already there untouched. Every version
carries TF Serving's warm-up requests, replayed through the model before it goes live.

On object stores (gs://...) a folder rename is a copy, so there the files are copied with
saved_model.pb last, as TFX does.
"""
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components import code_digest
from evaluation import render
from models import assets_extra
from serving import layout, warmup

MODEL_CARD_KEY = "model_card"
STAGING_PREFIX = ".staging-"


def write_card(card_dir: str, version: str, serving_path: str, target_dir: str) -> None:
    """The model card with its version filled in; no per-patient predictions in serving."""
    with tf.io.gfile.GFile(os.path.join(card_dir, render.JSON_FILE)) as f:
        card = json.load(f)
    card.update(version=version, pushed_to=serving_path)
    tf.io.gfile.makedirs(target_dir)
    for figure in render.FIGURES:
        source = os.path.join(card_dir, figure)
        if tf.io.gfile.exists(source):
            tf.io.gfile.copy(source, os.path.join(target_dir, figure), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(target_dir, render.JSON_FILE), "w") as f:
        json.dump(card, f, indent=2)
    render.write_documents(card, target_dir)


def write_extras(model_path: str, version_dir: str, serving_path: str, version: str,
                 card_dir: Optional[str]) -> None:
    """assets.extra/: the model card and TF Serving's warm-up requests, replayed through the
    model before the version can go live (TF Serving refuses a version whose warm-up fails)."""
    if card_dir:
        write_card(card_dir, version, serving_path, os.path.join(version_dir, assets_extra.DIR))
    model_name = os.path.basename(os.path.dirname(serving_path.rstrip("/")))
    warmup.replay(warmup.write(version_dir, model_name), model_path)


def publish(model_path: str, base_directory: str, version: str,
            card_dir: Optional[str] = None) -> str:
    """Put the SavedModel (card and warm-up file) at <base>/<version> so that it appears all
    at once."""
    serving_path = os.path.join(base_directory, version)
    if "://" in base_directory:
        io_utils.copy_dir(model_path, serving_path, deny_regex_patterns=[r"saved_model\.pb"])
        write_extras(model_path, serving_path, serving_path, version, card_dir)
        tf.io.gfile.copy(os.path.join(model_path, layout.SAVED_MODEL_FILE),
                         os.path.join(serving_path, layout.SAVED_MODEL_FILE))
        return serving_path
    staging = os.path.join(base_directory, STAGING_PREFIX + version)
    try:
        io_utils.copy_dir(model_path, staging)
        write_extras(model_path, staging, serving_path, version, card_dir)
        os.rename(staging, serving_path)
    except BaseException:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        raise
    return serving_path


class Executor(pusher_executor.Executor):
    """Pushes a blessed model like TFX's Pusher (same output artifact and properties)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        code_digest.check_component(exec_properties.get(code_digest.CODE_SHA256_KEY), "serving_pusher")
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        base_directory = destination.filesystem.base_directory
        tf.io.gfile.makedirs(base_directory)
        model_path = self.GetModelPath(input_dict)
        cards = input_dict.get(MODEL_CARD_KEY) or []
        version = layout.next_version(base_directory)
        serving_path = publish(model_path, base_directory, version,
                               cards[0].uri if cards else None)
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
