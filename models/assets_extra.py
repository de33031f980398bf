"""The files a trained SavedModel carries in assets.extra/, the folder TF Serving copies
with the model and otherwise leaves alone (SERVING_DIR/<model_name>/<version>/assets.extra/)."""
import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf

DIR = "assets.extra"
# What training did (best epoch, eval losses, the folded temperature), written by the Trainer.
TRAINING_SUMMARY_FILE = "training.json"
# The model card, written by the Pusher into each pushed version.
MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_PATH = f"{DIR}/{MODEL_CARD_FILE}"


def read_training_summary(saved_model_dir: str) -> Optional[Dict[str, Any]]:
    """The Trainer's training.json in a SavedModel folder (None for models saved without)."""
    path = os.path.join(saved_model_dir, DIR, TRAINING_SUMMARY_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
