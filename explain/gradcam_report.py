"""Explain a set of images with one model: the code shared by the component and `cxr gradcam`.

Writes overlays/*.png (input | heatmap over input), grid_<class>.png, summary.json and
report.html into one folder.
"""
import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from explain import faithfulness, figures, gradcam, gradcam_defaults
from imaging import prepare
from models import features
from models.preprocessing import decode_image
from serving import layout

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
OVERLAY_DIR = "overlays"
METRICS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc",
           "border_mass", "lung_field_mass", "randomization_rank_correlation")
DISCLAIMER = "Research and education only; not for clinical use."


@dataclasses.dataclass
class Case:
    name: str
    image_bytes: bytes
    true_label: Optional[str] = None  # one of features.CLASS_NAMES, None when unknown


@dataclasses.dataclass
class Options:
    overlay_alpha: float = gradcam_defaults.OVERLAY_ALPHA
    steps: int = gradcam_defaults.STEPS
    target_layer: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ValueError(f"overlay alpha must be between 0 and 1, got {self.overlay_alpha}")
        if self.steps < 2:
            raise ValueError(f"faithfulness steps must be at least 2, got {self.steps}")


def decode(image_bytes: bytes, image_size: int) -> np.ndarray:
    """Exactly the model's preprocessing (Transform's decode_image), as a numpy array."""
    try:
        return decode_image(tf.constant(image_bytes), image_size).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        raise ValueError("not a JPEG or PNG image") from None


def _file_stem(index: int, name: str) -> str:
    return f"{index:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:60]}"


def _class_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _finite_or_none(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


def _class_figures(records: List[Dict[str, Any]], panels: Dict[str, list], out_dir: str
                   ) -> Dict[str, Dict[str, Any]]:
    """Counts and mean figures per class, and each class's grid image (written here)."""
    classes = {}
    for name in features.CLASS_NAMES:
        members = [r for r in records if r["group"] == name]
        if not members:
            continue
        grid_file = f"grid_{_class_slug(name)}.png"
        figures.grid(panels[name]).save(os.path.join(out_dir, grid_file),
                                       compress_level=figures.PNG_COMPRESS_LEVEL)
        classes[name] = {
            "images": len(members),
            "correct": sum(r["correct"] is True for r in members),
            "misclassified": sum(r["correct"] is False for r in members),
            "unlabelled": sum(r["correct"] is None for r in members),
            "grid": grid_file,
            "mean": {m: _mean([r[m] for r in members]) for m in METRICS},
        }
    return classes


def explain(model: tf.keras.Model, cases: Sequence[Case], out_dir: str,
            options: Options = Options(), context: Optional[Dict[str, Any]] = None,
            progress: bool = False, cam: Optional[gradcam.GradCam] = None) -> Dict[str, Any]:
    """Heatmaps, faithfulness figures and the report for `cases`; returns summary.json's data.

    Each heatmap explains the class the model predicts for that image. progress: a bar on
    stderr (on a terminal) over the images' faithfulness curves (the long part). cam: the
    caller's GradCam of `model` at the options' target layer, when it has one (its traced
    functions are reused).
    """
    from tqdm import tqdm

    if not cases:
        raise ValueError("no images to explain")
    cam = cam or gradcam.GradCam(model, gradcam.find_target_layer(model, options.target_layer))
    images = np.stack([decode(case.image_bytes, cam.image_size) for case in cases])
    explanation = cam.explain(images)
    random_cam = gradcam.GradCam(gradcam.randomized_copy(model, options.seed), cam.target)
    random_maps = random_cam.explain(images, explanation.class_ids).signed_maps
    border = faithfulness.border_mask(cam.image_size)
    lung_field = faithfulness.lung_field_mask(cam.image_size)

    os.makedirs(os.path.join(out_dir, OVERLAY_DIR), exist_ok=True)
    records, panels = [], {}
    for index, case in enumerate(tqdm(cases, desc="explaining", unit="image",
                                      disable=None if progress else True)):
        heatmap, class_id = explanation.heatmaps[index], int(explanation.class_ids[index])
        predicted = features.CLASS_NAMES[class_id]
        curves = faithfulness.deletion_insertion(cam.predict, images[index], heatmap, class_id,
                                                 options.steps, seed=options.seed + index)
        overlay = f"{OVERLAY_DIR}/{_file_stem(index, case.name)}.png"
        panel = figures.overlay_panel(images[index], heatmap, options.overlay_alpha)
        panel.save(os.path.join(out_dir, overlay), compress_level=figures.PNG_COMPRESS_LEVEL)
        group = case.true_label or predicted
        record = {
            "name": case.name, "overlay": overlay, "group": group,
            "true_label": case.true_label, "predicted_label": predicted,
            "correct": None if case.true_label is None else case.true_label == predicted,
            "probabilities": {name: float(p) for name, p in
                              zip(features.CLASS_NAMES, explanation.probabilities[index])},
            **curves.aucs(),
            "border_mass": faithfulness.mass_share(heatmap, border),
            "lung_field_mass": faithfulness.mass_share(heatmap, lung_field),
            "randomization_rank_correlation": faithfulness.rank_correlation(
                explanation.signed_maps[index], random_maps[index]),
        }
        records.append({k: _finite_or_none(v) if isinstance(v, float) else v
                        for k, v in record.items()})
        confidence = explanation.probabilities[index, class_id]
        panels.setdefault(group, []).append(
            (panel, f"{case.true_label or '?'} -> {predicted} {confidence:.2f}"))

    summary = {
        "disclaimer": DISCLAIMER,
        "context": dict(context or {}),
        "target_layer": cam.target.qualified_name,
        "image_size": cam.image_size,
        "overlay_alpha": options.overlay_alpha,
        "steps": options.steps,
        "regions": {
            "border_fraction": faithfulness.BORDER_FRACTION,
            "border_area_share": float(border.mean()),
            "lung_field_area_share": float(lung_field.mean()),
            "lung_field": faithfulness.LUNG_FIELD_DEFINITION,
        },
        "images": records,
        "classes": _class_figures(records, panels, out_dir),
        "mean": {m: _mean([r[m] for r in records]) for m in METRICS},
    }
    with open(os.path.join(out_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        f.write(figures.report_html(summary))
    return summary


def explain_files(paths: Sequence[str], model_dir: str, out_dir: str,
                  options: Options = Options(), progress: bool = False) -> Dict[str, Any]:
    """`cxr gradcam`: explain image files without labels, each prepared as ingestion prepares
    it (imaging.prepare); ValueError/FileNotFoundError for anything the user has to fix (a
    missing file, a non-image, no model)."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"image not found: {missing[0]}")
    cases = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:  # the one image path: exactly what ingestion would have stored
            cases.append(Case(os.path.basename(path), prepare.prepare_image(data).encoded))
        except prepare.Rejected as rejection:
            raise ValueError(f"{path}: {rejection}") from None
    model = layout.load_keras_model(model_dir)
    return explain(model, cases, out_dir, options,
                   {"model": layout.find_saved_model(model_dir), "images": ", ".join(paths)},
                   progress)


def summary_lines(summary: Dict[str, Any]) -> List[str]:
    """One terminal line per image: prediction and the figures that say how far to trust it."""
    def figure(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = []
    for record in summary["images"]:
        predicted = record["predicted_label"]
        lines.append(
            f"{record['name']}: {predicted} {record['probabilities'][predicted]:.3f}; "
            f"deletion AUC {figure(record['deletion_auc'])} (random order "
            f"{figure(record['random_deletion_auc'])}), insertion AUC "
            f"{figure(record['insertion_auc'])} (random {figure(record['random_insertion_auc'])})"
            f", border mass {figure(record['border_mass'])}, lung-field mass "
            f"{figure(record['lung_field_mass'])}, rank corr. vs random model "
            f"{figure(record['randomization_rank_correlation'])}")
    return lines
