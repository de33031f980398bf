"""Pictures and the HTML page of a Grad-CAM report (Pillow only; no plotting library)."""
import html
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models import features

DISPLAY_SIZE = 224
GRID_COLUMNS = 4
CAPTION_HEIGHT = 28
# zlib level of the report's PNGs: the default (6) spent 14 % of the component's time
# encoding overlays (py-spy); level 1 is several times faster for files about a third larger.
PNG_COMPRESS_LEVEL = 1
# Jet-like colour map: dark blue (no attention) through cyan and yellow to dark red.
_COLOUR_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_COLOURS = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0],
                     [128, 0, 0]], dtype=float)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB."""
    values = np.clip(values, 0.0, 1.0)
    channels = [np.interp(values, _COLOUR_STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _resized(array: np.ndarray, size: int) -> np.ndarray:
    """Float [S, S] or [S, S, C] -> the same with side `size` (bilinear)."""
    if array.ndim == 3:
        return np.stack([_resized(array[..., c], size) for c in range(array.shape[-1])], axis=-1)
    image = Image.fromarray(np.asarray(array, dtype=np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.BILINEAR))


def overlay_panel(image: np.ndarray, heatmap: np.ndarray, alpha: float,
                  size: Optional[int] = None) -> Image.Image:
    """Side by side: the model's input | the heatmap blended over it with weight `alpha`."""
    size = size or max(DISPLAY_SIZE, image.shape[0])
    original = _resized(image, size) * 255.0
    blended = (1.0 - alpha) * original + alpha * colormap(_resized(heatmap, size))
    panel = np.concatenate([original, blended], axis=1)
    return Image.fromarray(np.clip(panel, 0, 255).round().astype(np.uint8))


def grid(panels: Sequence[Tuple[Image.Image, str]], columns: int = GRID_COLUMNS) -> Image.Image:
    """Panels of equal size in rows of `columns`, each with a caption underneath."""
    width, height = panels[0][0].size
    rows = math.ceil(len(panels) / columns)
    columns = min(columns, len(panels))
    sheet = Image.new("RGB", (columns * width, rows * (height + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (panel, caption) in enumerate(panels):
        x, y = (index % columns) * width, (index // columns) * (height + CAPTION_HEIGHT)
        sheet.paste(panel, (x, y))
        draw.text((x + 4, y + height + 6), caption, fill="black", font=font)
    return sheet


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.3f}"


_METRIC_COLUMNS = [
    ("deletion_auc", "deletion AUC ↓"), ("random_deletion_auc", "random order"),
    ("insertion_auc", "insertion AUC ↑"), ("random_insertion_auc", "random order"),
    ("border_mass", "border mass"), ("lung_field_mass", "lung-field mass"),
    ("randomization_rank_correlation", "ρ vs random model"),
]

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.cases { display: flex; flex-wrap: wrap; gap: 1em; }
.case { border: 1px solid #ccc; padding: 0.5em; width: 460px; font-size: 0.85em; }
.case img { width: 448px; }
.wrong { border-color: #c33; }
"""


def _metric_table(rows: List[Tuple[str, Dict[str, Any]]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _METRIC_COLUMNS)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_number(values.get(key))}</td>" for key, _ in _METRIC_COLUMNS)
        + "</tr>" for name, values in rows)
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _case_card(case: Dict[str, Any]) -> str:
    probabilities = ", ".join(f"{html.escape(name)} {case['probabilities'][name]:.3f}"
                              for name in features.CLASS_NAMES)
    metrics = "<br>".join(f"{html.escape(label)}: {_number(case[key])}"
                          for key, label in _METRIC_COLUMNS)
    true_label = case["true_label"] or "unknown"
    css = "case wrong" if case["correct"] is False else "case"
    return (f'<div class="{css}"><img src="{html.escape(case["overlay"])}" '
            f'alt="{html.escape(case["name"])}"><br><b>{html.escape(case["name"])}</b><br>'
            f"true: {html.escape(true_label)} · predicted: "
            f"<b>{html.escape(case['predicted_label'])}</b><br>{probabilities}<br>{metrics}</div>")


def _class_section(name: str, summary: Dict[str, Any]) -> str:
    figures = summary["classes"][name]
    cases = [c for c in summary["images"] if c["group"] == name]
    parts = [f"<h2>{html.escape(name)}</h2>",
             f"<p>{figures['images']} image(s): {figures['correct']} correct, "
             f"{figures['misclassified']} misclassified, {figures['unlabelled']} without a "
             f'true label. <a href="{html.escape(figures["grid"])}">All overlays of this class '
             "in one grid</a>.</p>"]
    for title, correct in (("Correct", True), ("Misclassified", False), ("No true label", None)):
        chosen = [c for c in cases if c["correct"] is correct]
        if chosen:
            parts.append(f"<h3>{title}</h3><div class=\"cases\">"
                         + "".join(_case_card(c) for c in chosen) + "</div>")
    return "\n".join(parts)


def report_html(summary: Dict[str, Any]) -> str:
    """One page that opens from disk: every image is a file next to it (relative links)."""
    regions = summary["regions"]
    context = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>"
                      for k, v in summary["context"].items())
    class_rows = [(name, summary["classes"][name]["mean"]) for name in features.CLASS_NAMES
                  if name in summary["classes"]]
    sections = "\n".join(_class_section(name, summary) for name in features.CLASS_NAMES
                         if name in summary["classes"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Grad-CAM report</title>
<style>{_STYLE}</style></head><body>
<h1>Grad-CAM report</h1>
<p class="warning"><b>Research and education only; not for clinical use.</b> A heatmap shows
which regions moved this model's score, not where disease is.</p>
<ul>{context}<li>target layer: {html.escape(summary['target_layer'])}</li>
<li>model input: {summary['image_size']}×{summary['image_size']} px;
each overlay shows exactly that input and the heatmap of the predicted class</li></ul>
<h2>Mean per class (grouped by true label, or by predicted label when unknown)</h2>
{_metric_table(class_rows + [("all images", summary["mean"])])}
<p><b>Reading the numbers.</b> Deletion AUC: the predicted class's probability as the most
salient blocks (1/16 of the side) are blacked out in {summary['steps']} steps; lower is more
faithful and should be clearly below the random-order value. Insertion AUC: the probability as
salient blocks are restored into a blurred copy; higher is more faithful and should beat random
order.
Border mass: heatmap share in the outer {regions['border_fraction']:.0%} of each side
({regions['border_area_share']:.0%} of the area; far more than that suggests labels, markers
or edges are used as a shortcut). Lung-field mass: share inside two fixed ellipses
({regions['lung_field_area_share']:.0%} of the area): {html.escape(regions['lung_field'])}
ρ vs random model: rank correlation with the map of the same architecture re-initialised;
near 1 means the map ignores what the model learned (Adebayo et al., 2018).</p>
{sections}
<p><a href="summary.json">summary.json</a> holds every number on this page.</p>
</body></html>
"""
