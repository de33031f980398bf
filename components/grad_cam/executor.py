"""GradCam executor: picks test images (typical hits and mistakes per class) and explains them."""
import os
import tempfile
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import code_digest
from components.grad_cam import explain, gradcam
from models import features

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
BLESSING_KEY = "model_blessing"
REPORT_KEY = "report"
IMAGES_PER_CLASS_KEY = "images_per_class"
ALL_MISCLASSIFIED_KEY = "include_all_misclassified"
MAX_MISCLASSIFIED_KEY = "max_misclassified"
TARGET_LAYER_KEY = "target_layer"
OVERLAY_ALPHA_KEY = "overlay_alpha"
STEPS_KEY = "faithfulness_steps"
SPLIT_KEY = "split"


def read_split(examples: types.Artifact, split: str) -> List[explain.Case]:
    """Every example of one split as a labelled case named '<patient id>-<index>'."""
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no examples in split {split!r} of {examples.uri}")
    spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="")
            for key in (features.IMAGE_KEY, features.LABEL_KEY, features.PATIENT_ID_KEY)}
    cases = []
    for index, record in enumerate(tf.data.TFRecordDataset(files, compression_type="GZIP")):
        parsed = {k: v.numpy() for k, v in tf.io.parse_single_example(record, spec).items()}
        label = parsed[features.LABEL_KEY].decode()
        cases.append(explain.Case(
            name=f"{parsed[features.PATIENT_ID_KEY].decode() or split}-{index}",
            image_bytes=parsed[features.IMAGE_KEY],
            true_label=label if label in features.CLASS_NAMES else None))
    return cases


def _shares(available: Sequence[int], total: int) -> List[int]:
    """How many of each group to take, one per group in turn, until `total` are taken."""
    taken = [0] * len(available)
    while total > 0 and any(t < a for t, a in zip(taken, available)):
        for group, count in enumerate(available):
            if total > 0 and taken[group] < count:
                taken[group] += 1
                total -= 1
    return taken


def select_cases(true_ids: Sequence[int], probabilities: np.ndarray, images_per_class: int,
                 include_all_misclassified: bool, max_misclassified: int = 0) -> List[int]:
    """Indices to explain: per true class, the most confident correct predictions, then the
    most confident mistakes (all of them, or as many as images_per_class).

    With include_all_misclassified, max_misclassified > 0 caps the mistakes in total: each
    explained mistake costs a gradient pass and 4 * (steps + 1) forward passes, and a barely
    trained model gets most of the split wrong. The cap is shared out one per class in turn,
    so every class keeps its most confident mistakes.
    """
    true_ids = np.asarray(true_ids)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    groups = {}
    for class_id in range(features.NUM_CLASSES):
        for correct in (True, False):
            members = np.flatnonzero((true_ids == class_id) & ((predicted == true_ids) == correct))
            groups[class_id, correct] = members[np.argsort(-confidence[members], kind="stable")]
    mistakes = [len(groups[class_id, False]) for class_id in range(features.NUM_CLASSES)]
    if not include_all_misclassified:
        mistake_limits = [images_per_class] * features.NUM_CLASSES
    elif max_misclassified > 0:
        mistake_limits = _shares(mistakes, max_misclassified)
    else:
        mistake_limits = mistakes
    chosen = []
    for class_id in range(features.NUM_CLASSES):
        chosen.extend(int(i) for i in groups[class_id, True][:images_per_class])
        chosen.extend(int(i) for i in groups[class_id, False][:mistake_limits[class_id]])
    return chosen


def _decodable(cases: Sequence[explain.Case], image_size: int
               ) -> Tuple[List[explain.Case], np.ndarray, List[str]]:
    kept, images, skipped = [], [], []
    for case in cases:
        try:
            images.append(explain.decode(case.image_bytes, image_size))
            kept.append(case)
        except ValueError:
            skipped.append(case.name)
    return kept, np.stack(images) if images else np.zeros((0, image_size, image_size, 3)), skipped


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        code_digest.check_component(exec_properties.get(code_digest.CODE_SHA256_KEY), "grad_cam")
        model_artifact = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        split = exec_properties[SPLIT_KEY]

        model = explain.load_model(model_artifact.uri)
        cam = gradcam.GradCam(model, gradcam.find_target_layer(
            model, exec_properties[TARGET_LAYER_KEY] or None))
        cases, images, skipped = _decodable(read_split(examples, split), cam.image_size)
        labelled = [i for i, case in enumerate(cases) if case.true_label is not None]
        if not labelled:
            raise ValueError(f"split {split!r} has no decodable image with a known label")
        cases = [cases[i] for i in labelled]
        probabilities = cam.predict(images[labelled])
        true_ids = [features.CLASS_NAMES.index(case.true_label) for case in cases]
        chosen = select_cases(true_ids, probabilities, exec_properties[IMAGES_PER_CLASS_KEY],
                              bool(exec_properties[ALL_MISCLASSIFIED_KEY]),
                              int(exec_properties.get(MAX_MISCLASSIFIED_KEY) or 0))
        wrong = probabilities.argmax(axis=1) != np.asarray(true_ids)
        misclassified = int(wrong.sum())
        explained_mistakes = int(wrong[chosen].sum())
        context = {"model": model_artifact.uri, "examples": f"{examples.uri} ({split} split)",
                   "images in split": len(cases), "misclassified in split": misclassified,
                   "misclassified explained": f"{explained_mistakes} of {misclassified}",
                   "undecodable images skipped": len(skipped)}
        if input_dict.get(BLESSING_KEY):
            blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
            context["blessed"] = bool(blessing.get_int_custom_property("blessed"))
        logging.info("GradCam: explaining %d of %d %s images", len(chosen), len(cases), split)
        options = explain.Options(overlay_alpha=exec_properties[OVERLAY_ALPHA_KEY],
                                  steps=exec_properties[STEPS_KEY],
                                  target_layer=cam.target.qualified_name)
        # Written locally, then copied: the artifact may live on Cloud Storage.
        with tempfile.TemporaryDirectory() as local_dir:
            summary = explain.explain(model, [cases[i] for i in chosen], local_dir, options,
                                      context)
            io_utils.copy_dir(local_dir, report.uri)
        report.set_int_custom_property("images", len(summary["images"]))
        report.set_int_custom_property("misclassified_in_split", misclassified)
        report.set_int_custom_property("misclassified_explained", explained_mistakes)
