"""The chest X-ray gate inside the tiny pipeline's pushed model (conftest.tiny_pipeline)."""
import glob
import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from conftest import SAMPLE_DIR
from models import assets_extra, features, ood


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_served_signature_carries_the_gate(tiny_pipeline):
    version_dir = tiny_pipeline.first.pushed_model_dir
    with open(os.path.join(version_dir, assets_extra.DIR,
                           assets_extra.TRAINING_SUMMARY_FILE)) as f:
        gate = json.load(f)["chest_xray_gate"]
    assert gate["eval_flagged"] <= ood.MAX_FLAGGED_EVAL and gate["eval_images"] >= 1
    assert gate["dimensions"] == [1280, 576]  # MobileNetV2: pooled features, block_13_expand_relu
    films = [open(path, "rb").read()
             for path in sorted(glob.glob(os.path.join(SAMPLE_DIR, "images", "*.jpg")))[:6]]
    rng = np.random.default_rng(0)
    others = [_png(np.full((128, 128), 128, np.uint8)),
              _png(rng.integers(0, 256, (128, 128, 3), np.uint8))]
    serve = tf.saved_model.load(version_dir).signatures[features.SERVING_SIGNATURE]
    outputs = serve(**{features.SERVING_INPUT: tf.constant(films + others)})
    scores = outputs[features.CHEST_XRAY_SCORE_OUTPUT].numpy()
    flags = outputs[features.IS_CHEST_XRAY_OUTPUT].numpy()
    assert scores.dtype == np.float32 and flags.dtype == bool and scores.shape == (8,)
    assert ((0 <= scores) & (scores <= 1)).all()
    assert not flags[-2:].any() and (scores[-2:] == 0).all()  # flat gray and colour noise
    assert flags[:6].mean() >= 0.5, scores[:6]
