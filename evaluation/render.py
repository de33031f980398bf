"""Model card rendering: Markdown and self-contained HTML from model_card.json, and figures.

The JSON is the source of truth; the Pusher re-renders it once it knows the version.
"""
import base64
import os
import re
from typing import Dict, List, Optional, Sequence

import markdown
import matplotlib
import numpy as np
import tensorflow as tf

from evaluation.metrics import Estimate
from models import assets_extra, features

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

JSON_FILE = assets_extra.MODEL_CARD_FILE
MARKDOWN_FILE = "model_card.md"
HTML_FILE = "model_card.html"
CONFUSION_FILE = "confusion_matrix.png"
ROC_FILE = "roc_curves.png"
RELIABILITY_FILE = "reliability.png"
PREDICTIONS_FILE = "predictions.csv"
FIGURES = (CONFUSION_FILE, ROC_FILE, RELIABILITY_FILE)
DISCLAIMER = ("**Research and education only. Not a medical device; not for clinical use.** "
              "This model must not be used to diagnose, triage or treat anyone.")
SHORTCUT_NOTE = (
    "Where source, hospital, age group or film style predicts the label, a model can score "
    "well by recognising them instead of disease. The tables count the training split; the "
    "per-source and per-age-group slices further down are the honest test, and a slice that "
    "holds one class only says nothing about telling classes apart.")
METRIC_LABELS = {"sensitivity": "sensitivity (recall)", "ppv": "PPV (precision)", "f1": "F1",
                 "auc": "ROC-AUC"}


def fmt(estimate: Optional[Dict], percent: bool = False) -> str:
    """'0.912 (0.870-0.950)' from {"value", "ci95"}; 'n/a' when undefined."""
    if not estimate or estimate.get("value") is None:
        return "n/a"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    value = f"{estimate['value'] * scale:.1f}{unit}" if percent else f"{estimate['value']:.3f}"
    low, high = estimate.get("ci95") or [None, None]
    if low is None:
        return value
    if percent:
        return f"{value} ({low * scale:.1f}-{high * scale:.1f}{unit})"
    return f"{value} ({low:.3f}-{high:.3f})"


def covid_miss_sentence(test_metrics: Dict) -> str:
    """The COVID-19 false-negative rate, stated plainly."""
    covid = features.CLASS_NAMES[features.COVID_CLASS_ID]
    positives = test_metrics["class_counts"][covid]
    if not positives:
        return f"The test split holds no {covid} images, so the miss rate is unknown."
    detected = test_metrics["confusion_matrix"][features.COVID_CLASS_ID][features.COVID_CLASS_ID]
    sensitivity = test_metrics["per_class"][covid]["sensitivity"]
    miss = Estimate(sensitivity["value"], *sensitivity["ci95"]).complement().to_json()
    return (f"Of {positives} {covid} test images, {positives - detected} were called something "
            f"else: a false-negative rate of {fmt(miss, percent=True)} (95% CI over patients). "
            f"Every missed {covid} case is a sick patient told they do not have it.")


def _metrics_table(metrics: Dict) -> List[str]:
    lines = ["| class | n | " + " | ".join(METRIC_LABELS.values()) + " |",
             "|---|---|" + "---|" * len(METRIC_LABELS)]
    for name in features.CLASS_NAMES:
        per_class = metrics["per_class"][name]
        lines.append(f"| {name} | {metrics['class_counts'][name]} | "
                     + " | ".join(fmt(per_class[m]) for m in METRIC_LABELS) + " |")
    return lines


def _slice_table(slices: Dict[str, Dict]) -> List[str]:
    covid = features.CLASS_NAMES[features.COVID_CLASS_ID]
    lines = ["| slice | images | patients | accuracy | macro-F1 | macro ROC-AUC | "
             f"{covid} sensitivity |", "|---|---|---|---|---|---|---|"]
    for value, report in slices.items():
        lines.append(f"| {value} | {report['n_images']} | {report['n_patients']} | "
                     f"{fmt(report['accuracy'])} | {fmt(report['macro_f1'])} | "
                     f"{fmt(report['macro_auc'])} | "
                     f"{fmt(report['per_class'][covid]['sensitivity'])} |")
    return lines


def _crosstab_table(table: Dict[str, Dict[str, int]], key: str) -> List[str]:
    lines = [f"| {key} | " + " | ".join(features.CLASS_NAMES) + " |",
             "|---|" + "---|" * features.NUM_CLASSES]
    return lines + [f"| {value} | " + " | ".join(str(counts[name])
                                                  for name in features.CLASS_NAMES) + " |"
                    for value, counts in table.items()]


def _bias_section(train_bias: Optional[Dict]) -> List[str]:
    if not train_bias:
        return []
    warnings = train_bias["warnings"] or ["none found by the checks (classes missing from an "
                                          "age group, single-class sources, a source holding "
                                          "most of a class)."]
    return (["### Shortcuts in the training data", "", SHORTCUT_NOTE, "",
             "Warnings:", ""] + [f"- {w}" for w in warnings]
            + ["", f"Training split, {train_bias['images']} images, by source:", ""]
            + _crosstab_table(train_bias["class_by_source"], "source")
            + ["", "By age group:", ""]
            + _crosstab_table(train_bias["class_by_age_group"], "age group") + [""])


def _calibration_section(block: Optional[Dict]) -> List[str]:
    if not block:
        return ["", "## Calibration", "", "No calibration record (training.json) in this model."]
    lines = ["", "## Calibration", "",
             f"The model's logits are divided by a temperature of {block['temperature']:.3f}, "
             f"fitted on the {block['fitted_on']} to minimise the negative log-likelihood and "
             "folded into the last layer, so the probabilities every client gets are the "
             "scaled ones; no predicted class changes. Expected calibration error (ECE, "
             f"{len(block['test_after']['bins'])} equal-width confidence bins) on the test "
             f"split: {block['test_before']['ece']:.3f} before scaling, "
             f"{block['test_after']['ece']:.3f} after.", ""]
    if block["at_range_limit"]:
        lines += ["**The temperature sits at the edge of its search range: the eval split is "
                  "too small or the model no better than chance, and the probabilities "
                  "should not be read as calibrated.**", ""]
    return lines + [f"![Reliability diagram]({RELIABILITY_FILE})"]


def render_markdown(card: Dict) -> str:
    metrics, model, data = card["test_metrics"], card["model"], card["training_data"]
    version = card.get("version") or "not pushed"
    verdict = "blessed" if card.get("blessed") else "NOT blessed"
    lines = [
        f"# Model card: {card['model_name']} ({model['architecture']}), version {version}",
        "", f"> {DISCLAIMER}", "",
        "## Model details", "",
        f"- Architecture: {model['architecture']}, {model['parameters']:,} parameters, "
        f"input {model['image_size']}x{model['image_size']} grey images (3 channels), outputs "
        f"softmax probabilities for {', '.join(features.CLASS_NAMES)} in that order.",
        f"- Starting weights: {model['weights']}. Epochs: {model['epochs']} (two phases for "
        "transfer models: head on a frozen backbone, then the backbone's top layers)"
        + (f"; kept: epoch {model['best_epoch']} of {model['epochs_run']} run, the lowest "
           "eval-split loss." if model.get("best_epoch") else "."),
        f"- Hyperparameters: {model['hyperparameters_source']}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(model["hyperparameters"].items())) + ".",
        f"- Evaluator verdict: **{verdict}** ({card['blessing_rule']}).",
        f"- Created {card['created']} by cxr-tfx {card['versions']['cxr-tfx']} with "
        + ", ".join(f"{k} {v}" for k, v in card["versions"].items() if k != "cxr-tfx") + ".",
        "",
        "## Intended use", "",
        "Research on, and teaching of, chest X-ray classification pipelines: reproducing "
        "results, comparing architectures, studying shortcut learning. Out of scope: any "
        "clinical, screening or triage use, any use on patients, and any population unlike "
        "the development data (see below).",
        "",
        "## Training data", "",
        f"- Source: `{data['data_dir']}`; split by patient (no patient in two splits), "
        f"{data['split_counts']}.",
        f"- Test split by source: {data['test_sources']}; by age group: "
        f"{data['test_age_groups']}.",
        "",
    ] + _bias_section(data.get("train_bias")) + [
        f"## Test metrics ({metrics['n_images']} images, {metrics['n_patients']} patients)",
        "",
        "Point estimates with 95% confidence intervals: Wilson score intervals for "
        "proportions (accuracy, sensitivity, PPV) at the sample size left after allowing for "
        "patients with several images; a bootstrap over test patients "
        f"({card['bootstrap_resamples']} resamples) for F1 and ROC-AUC.",
        "",
        f"- Accuracy {fmt(metrics['accuracy'])}; macro-F1 {fmt(metrics['macro_f1'])}; "
        f"macro ROC-AUC {fmt(metrics['macro_auc'])}.",
        f"- **{covid_miss_sentence(metrics)}**",
        "",
    ] + _metrics_table(metrics) + [
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        "| true \\ predicted | " + " | ".join(features.CLASS_NAMES) + " |",
        "|---|" + "---|" * features.NUM_CLASSES,
    ] + [f"| {name} | " + " | ".join(str(v) for v in row) + " |"
         for name, row in zip(features.CLASS_NAMES, metrics["confusion_matrix"])] + [
        "",
        f"![Confusion matrix]({CONFUSION_FILE}) ![ROC curves]({ROC_FILE})",
        "",
        "## Slices", "",
        "A class that a slice does not contain has no sensitivity there (n/a). Small slices "
        "have wide intervals: read them before the headline numbers.",
    ]
    for feature, slices in card["slices"].items():
        lines += ["", f"### By {feature.replace('_', ' ')}", ""] + _slice_table(slices)
    lines += _calibration_section(card.get("calibration"))
    tfma = card.get("tfma_cross_check")
    if tfma:
        lines += ["", "## Cross-check with TFMA", "",
                  f"The Evaluator (TFMA) measured accuracy {tfma['accuracy']:.3f} and macro "
                  f"ROC-AUC {tfma['macro_auc']:.3f} on the same {tfma['examples']} test "
                  "examples (its AUC is a binned approximation)."]
    lines += ["", "## Limitations", "",
              "- Development data from a few public collections; no external validation.",
              "- Images are reduced to grey levels and resized without keeping the aspect "
              "ratio; lateral views and non-chest images were not part of training.",
              "- Grad-CAM reports (GradCam component) show where the model looks; they are "
              "not proof that it looks at disease.", ""]
    return "\n".join(lines)


def _embed_images(html: str, folder: str) -> str:
    """Inline the figures so the HTML opens anywhere, copied alone or not."""
    def inline(match):
        path = os.path.join(folder, match.group(1))
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            return match.group(0)
        with tf.io.gfile.GFile(path, "rb") as f:
            return f'src="data:image/png;base64,{base64.b64encode(f.read()).decode()}"'
    return re.sub(r'src="([^":]+\.png)"', inline, html)


def render_html(markdown_text: str, folder: str, title: str) -> str:
    body = markdown.markdown(markdown_text, extensions=["tables"])
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em}"
             "blockquote{background:#fff3cd;border-left:6px solid #d39e00;margin:0;"
             "padding:.5em 1em}img{max-width:48%}")
    return _embed_images(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}"
                         f"</title><style>{style}</style></head><body>{body}</body></html>",
                         folder)


def write_documents(card: Dict, folder: str) -> None:
    """model_card.md and model_card.html next to the figures already in `folder`."""
    text = render_markdown(card)
    with tf.io.gfile.GFile(os.path.join(folder, MARKDOWN_FILE), "w") as f:
        f.write(text)
    with tf.io.gfile.GFile(os.path.join(folder, HTML_FILE), "w") as f:
        f.write(render_html(text, folder, f"Model card: {card['model_name']}"))


def _save_png(figure, path: str) -> None:
    """Through tf.io.gfile: the card's folder may be on Cloud Storage."""
    with tf.io.gfile.GFile(path, "wb") as f:
        figure.savefig(f, format="png")


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], title: str, path: str) -> None:
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    ticks = range(features.NUM_CLASSES)
    axes.set_xticks(ticks, features.CLASS_NAMES)
    axes.set_yticks(ticks, features.CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    _save_png(figure, path)
    plt.close(figure)


def roc_points(is_positive: np.ndarray, scores: np.ndarray):
    """(false positive rates, true positive rates) at every distinct threshold."""
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_positive)[last_of_each_score]
    fps = (last_of_each_score + 1) - tps
    return (np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)])


def plot_roc_curves(labels: np.ndarray, probabilities: np.ndarray, aucs: Dict[str, Dict],
                    title: str, path: str) -> None:
    """One-vs-rest ROC curve per class, with its AUC and interval in the legend."""
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    for class_id, name in enumerate(features.CLASS_NAMES):
        is_positive = np.asarray(labels) == class_id
        if is_positive.all() or not is_positive.any():
            continue
        fpr, tpr = roc_points(is_positive, np.asarray(probabilities)[:, class_id])
        axes.plot(fpr, tpr, label=f"{name} {fmt(aucs.get(name))}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    _save_png(figure, path)
    plt.close(figure)


def plot_reliability(block: Dict, title: str, path: str) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for key, label in (("test_before", "before scaling"), ("test_after", "after scaling")):
        bins = [b for b in block[key]["bins"] if b["count"]]
        axes.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                  label=f"{label} (ECE {block[key]['ece']:.3f})")
    axes.set_xlabel("confidence (probability of the predicted class)")
    axes.set_ylabel("accuracy")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    _save_png(figure, path)
    plt.close(figure)
