"""GradCam executor: picks test images (typical hits and mistakes per class) and explains them."""
import dataclasses
import os
import tempfile
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import code_digest
from explain import gradcam, gradcam_report
from models import features
from serving import layout

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


# Test images decoded and predicted at a time: memory stays flat whatever the split's size.
SCAN_BATCH = 64
_SPEC = {key: tf.io.FixedLenFeature([], tf.string, default_value="")
         for key in (features.IMAGE_KEY, features.LABEL_KEY, features.PATIENT_ID_KEY)}


def _split_records(examples: types.Artifact, split: str) -> tf.data.Dataset:
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no examples in split {split!r} of {examples.uri}")
    return tf.data.TFRecordDataset(files, compression_type="GZIP")


def read_split(examples: types.Artifact, split: str) -> Iterator[Tuple[int, gradcam_report.Case]]:
    """(position, case) for every example of one split, in order, named
    '<patient id>-<position>'; parsed a batch at a time, yielded one at a time."""
    index = 0
    for batch in _split_records(examples, split).batch(SCAN_BATCH):
        parsed = {k: v.numpy() for k, v in tf.io.parse_example(batch, _SPEC).items()}
        for patient, image, label in zip(parsed[features.PATIENT_ID_KEY],
                                         parsed[features.IMAGE_KEY], parsed[features.LABEL_KEY]):
            label = label.decode()
            yield index, gradcam_report.Case(
                name=f"{patient.decode() or split}-{index}", image_bytes=image,
                true_label=label if label in features.CLASS_NAMES else None)
            index += 1


@dataclasses.dataclass
class SplitScan:
    """What choosing the cases needs of a split, without its images."""
    positions: List[int]        # of the decodable, labelled examples, in split order
    true_ids: List[int]
    probabilities: np.ndarray   # [len(positions), NUM_CLASSES]
    skipped: List[str]          # names of undecodable images


def scan_split(examples: types.Artifact, split: str, cam: gradcam.GradCam) -> SplitScan:
    """Decode and predict the split SCAN_BATCH images at a time, keeping only the numbers.

    Holding every decoded test image (600 KB each at 224 px) grew with the split."""
    positions, true_ids, probabilities, skipped = [], [], [], []
    batch_positions, batch_images = [], []

    def flush() -> None:
        if batch_images:
            probabilities.append(cam.predict(np.stack(batch_images)))
            positions.extend(batch_positions)
            batch_positions.clear()
            batch_images.clear()

    for index, case in read_split(examples, split):
        if case.true_label is None:
            continue
        try:
            image = gradcam_report.decode(case.image_bytes, cam.image_size)
        except ValueError:
            skipped.append(case.name)
            continue
        batch_positions.append(index)
        batch_images.append(image)
        true_ids.append(features.CLASS_NAMES.index(case.true_label))
        if len(batch_images) == SCAN_BATCH:
            flush()
    flush()
    return SplitScan(positions, true_ids, np.concatenate(probabilities) if probabilities
                     else np.zeros((0, features.NUM_CLASSES), np.float32), skipped)


def cases_at(examples: types.Artifact, split: str, positions: Sequence[int]
             ) -> List[gradcam_report.Case]:
    """The cases at the given positions of the split, in the order given (a second read)."""
    wanted = set(positions)
    found = {index: case for index, case in read_split(examples, split) if index in wanted}
    return [found[position] for position in positions]


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
    explained mistake costs a gradient pass and 4 * (steps - 1) + 3 forward passes, and a barely
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


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        code_digest.check_component(exec_properties.get(code_digest.CODE_SHA256_KEY), "grad_cam")
        model_artifact = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        split = exec_properties[SPLIT_KEY]

        model = layout.load_keras_model(model_artifact.uri)
        cam = gradcam.GradCam(model, gradcam.find_target_layer(
            model, exec_properties[TARGET_LAYER_KEY] or None))
        scanned = scan_split(examples, split, cam)
        if not scanned.positions:
            raise ValueError(f"split {split!r} has no decodable image with a known label")
        probabilities, true_ids = scanned.probabilities, scanned.true_ids
        chosen = select_cases(true_ids, probabilities, exec_properties[IMAGES_PER_CLASS_KEY],
                              bool(exec_properties[ALL_MISCLASSIFIED_KEY]),
                              int(exec_properties.get(MAX_MISCLASSIFIED_KEY) or 0))
        wrong = probabilities.argmax(axis=1) != np.asarray(true_ids)
        misclassified = int(wrong.sum())
        explained_mistakes = int(wrong[chosen].sum())
        skipped = scanned.skipped
        context = {"model": model_artifact.uri, "examples": f"{examples.uri} ({split} split)",
                   "images in split": len(scanned.positions),
                   "misclassified in split": misclassified,
                   "misclassified explained": f"{explained_mistakes} of {misclassified}",
                   "undecodable images skipped": len(skipped)}
        if input_dict.get(BLESSING_KEY):
            blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
            context["blessed"] = bool(blessing.get_int_custom_property("blessed"))
        logging.info("GradCam: explaining %d of %d %s images", len(chosen),
                     len(scanned.positions), split)
        options = gradcam_report.Options(overlay_alpha=exec_properties[OVERLAY_ALPHA_KEY],
                                         steps=exec_properties[STEPS_KEY],
                                         target_layer=cam.target.qualified_name)
        # Written locally, then copied: the artifact may live on Cloud Storage.
        with tempfile.TemporaryDirectory() as local_dir:
            cases = cases_at(examples, split, [scanned.positions[i] for i in chosen])
            summary = gradcam_report.explain(model, cases, local_dir, options, context, cam=cam)
            io_utils.copy_dir(local_dir, report.uri)
        report.set_int_custom_property("images", len(summary["images"]))
        report.set_int_custom_property("misclassified_in_split", misclassified)
        report.set_int_custom_property("misclassified_explained", explained_mistakes)
