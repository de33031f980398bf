"""`cxr compare`: the same pipeline for several architectures on one patient-level split.

Each model runs as its own pipeline (`<pipeline_name>-<model>`, served as `cxr_<model>`),
exactly as `cxr run --model` would, so every model gets its Evaluator verdict, Grad-CAM
report and model card. The split is deterministic (a hash of the patient id), and the
comparison checks that every model was tested on the same images.

The recommendation is made on the eval split, never on the test split: the test numbers
are reported once, for every model, with 95% patient-bootstrap intervals.
"""
import dataclasses
import json
import os
import statistics
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from components.model_card import executor as card_executor
from components.model_card import metrics, render
from models import features
from pipeline import runners, summary
from pipeline.config import PipelineConfig

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
LATENCY_IMAGES = 20
LATENCY_WARMUP = 3


@dataclasses.dataclass
class ModelResult:
    model: str
    config: PipelineConfig
    run: summary.RunSummary
    card: Dict
    test_rows: List[Dict[str, str]]
    test_probabilities: np.ndarray
    eval_metrics: Dict


def model_config(base: PipelineConfig, model: str) -> PipelineConfig:
    return dataclasses.replace(base, model=model, pipeline_name=f"{base.pipeline_name}-{model}",
                               serving_model_name=f"cxr_{model}", pipeline_root=None)


def saved_model_bytes(model_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(model_dir) for name in names)


def cpu_latency_ms(model_dir: str, images: Sequence[bytes]) -> Dict[str, float]:
    """Per-image latency of serving_default at batch 1 (median and 90th percentile)."""
    predict = tf.saved_model.load(model_dir).signatures[features.SERVING_SIGNATURE]
    for image in images[:LATENCY_WARMUP]:
        predict(**{features.SERVING_INPUT: tf.constant([image])})
    times = []
    for image in images:
        start = time.perf_counter()
        predict(**{features.SERVING_INPUT: tf.constant([image])})
        times.append((time.perf_counter() - start) * 1000)
    return {"median": statistics.median(times), "p90": float(np.percentile(times, 90)),
            "images": len(times)}


def _collect(model: str, config: PipelineConfig, resamples: int) -> ModelResult:
    run = summary.summarize(config)
    if not run.model_card_dir:
        raise RuntimeError(f"the {model} run produced no model card")
    with open(os.path.join(run.model_card_dir, render.JSON_FILE)) as f:
        card = json.load(f)
    rows, probabilities = card_executor.read_predictions(
        os.path.join(run.model_card_dir, render.PREDICTIONS_FILE))
    model_dir = card_executor.find_saved_model(run.model_uri)
    eval_rows, eval_probabilities = card_executor.predict_split(model_dir, run.examples_uri,
                                                                "eval")
    eval_metrics = metrics.report(card_executor.label_ids(eval_rows), eval_probabilities,
                                  [r[features.PATIENT_ID_KEY] for r in eval_rows], resamples)
    return ModelResult(model, config, run, card, rows, probabilities, eval_metrics)


def _same_test_split(results: Sequence[ModelResult]) -> None:
    def key(result):
        return sorted((r[features.PATIENT_ID_KEY], r[features.LABEL_KEY]) for r in result.test_rows)
    reference = key(results[0])
    for result in results[1:]:
        if key(result) != reference:
            raise RuntimeError(f"{result.model} was tested on other images than "
                               f"{results[0].model}: the runs used different data or splits")


def recommend(results: Sequence[ModelResult], min_covid_recall: float) -> Dict:
    """Highest eval macro-F1 among models meeting the COVID-19 recall floor on eval."""
    covid = features.CLASS_NAMES[features.COVID_CLASS_ID]

    def covid_recall(result):
        return result.eval_metrics["per_class"][covid]["sensitivity"]["value"] or 0.0

    eligible = [r for r in results if covid_recall(r) >= min_covid_recall] or list(results)
    best = max(eligible, key=lambda r: (r.eval_metrics["macro_f1"]["value"] or 0.0,
                                        -r.card["model"]["parameters"]))
    return {
        "model": best.model,
        "rule": (f"highest macro-F1 on the eval split among models with eval {covid} "
                 f"sensitivity >= {min_covid_recall} (all models if none qualifies); "
                 "ties go to the smaller model. The test split played no part."),
        "qualified": [r.model for r in results if covid_recall(r) >= min_covid_recall],
    }


def paired_differences(results: Sequence[ModelResult], reference: str, resamples: int
                       ) -> Dict[str, Dict]:
    """Test macro-F1 and accuracy of each model minus the reference, on shared resamples."""
    base = next(r for r in results if r.model == reference)
    labels = card_executor.label_ids(base.test_rows)
    patients = [r[features.PATIENT_ID_KEY] for r in base.test_rows]
    return {
        result.model: {
            name: metrics.paired_difference(labels, result.test_probabilities,
                                            base.test_probabilities, patients, name,
                                            resamples).to_json()
            for name in ("macro_f1", "accuracy")}
        for result in results if result.model != reference}


def compare(base: PipelineConfig, models: Sequence[str], out_dir: str, command: str,
            resamples: int = metrics.DEFAULT_RESAMPLES, run: bool = True,
            progress: bool = False, verbose: bool = False) -> Dict:
    """Run (or reuse from cache) every model's pipeline and write the comparison files.

    progress: a bar over the models on stderr (on a terminal) and each component's start
    and end.
    """
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    results = []
    bar = tqdm(models, desc="models", unit="model", disable=None if progress else True)
    for model in bar:
        config = model_config(base, model)
        if run:
            tqdm.write(f"[{model}] running pipeline '{config.pipeline_name}'")
            runners.run_local(config, report=tqdm.write if progress else None, verbose=verbose)
        results.append(_collect(model, config, resamples))
    _same_test_split(results)
    test_images = _test_images(results[0])
    costs = {}
    for result in results:
        model_dir = card_executor.find_saved_model(result.run.model_uri)
        costs[result.model] = {
            "parameters": result.card["model"]["parameters"],
            "saved_model_mb": saved_model_bytes(model_dir) / 1e6,
            "latency_ms": cpu_latency_ms(model_dir, test_images),
        }
    choice = recommend(results, base.min_covid_recall)
    comparison = {
        "command": command,
        "data_dir": base.data_dir,
        "created": results[-1].card["created"],
        "versions": results[-1].card["versions"],
        "image_size": base.image_size,
        "epochs": base.epochs,
        "bootstrap_resamples": resamples,
        "test_images": results[0].card["test_metrics"]["n_images"],
        "test_patients": results[0].card["test_metrics"]["n_patients"],
        "recommendation": choice,
        "models": {r.model: {
            "pipeline_name": r.config.pipeline_name,
            "blessed": r.card["blessed"],
            "trained_model": r.run.model_uri,
            "pushed_model_dir": r.run.pushed_model_dir,
            "model_card": os.path.join(r.run.model_card_dir, render.HTML_FILE),
            "eval": {k: r.eval_metrics[k] for k in metrics.OVERALL},
            "test": r.card["test_metrics"],
            "slices": r.card["slices"],
            "cost": costs[r.model],
        } for r in results},
        "differences_vs_recommended": paired_differences(results, choice["model"], resamples),
    }
    _write_figures(results, out_dir)
    with open(os.path.join(out_dir, COMPARISON_JSON), "w") as f:
        json.dump(comparison, f, indent=2)
    with open(os.path.join(out_dir, COMPARISON_MD), "w", encoding="utf-8") as f:
        f.write(render_comparison(comparison))
    return comparison


def _test_images(result: ModelResult) -> List[bytes]:
    from serving.export import split_images
    return split_images(result.run.examples_uri, "test", LATENCY_IMAGES)


def _write_figures(results: Sequence[ModelResult], out_dir: str) -> None:
    for result in results:
        test = result.card["test_metrics"]
        render.plot_confusion_matrix(test["confusion_matrix"], result.model,
                                     os.path.join(out_dir, f"confusion_{result.model}.png"))
        render.plot_roc_curves(card_executor.label_ids(result.test_rows),
                               result.test_probabilities,
                               {n: v["auc"] for n, v in test["per_class"].items()},
                               result.model, os.path.join(out_dir, f"roc_{result.model}.png"))


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_comparison(comparison: Dict) -> str:
    fmt, models = render.fmt, comparison["models"]
    covid = features.CLASS_NAMES[features.COVID_CLASS_ID]
    choice = comparison["recommendation"]
    lines = [
        "# Model comparison", "",
        f"> {render.DISCLAIMER}", "",
        f"Made by `{comparison['command']}` on {comparison['created']} "
        f"({', '.join(f'{k} {v}' for k, v in comparison['versions'].items())}). "
        f"Image size {comparison['image_size']} px, {comparison['epochs']} epochs. Every model "
        f"was tested on the same {comparison['test_images']} images of "
        f"{comparison['test_patients']} patients. Intervals: 95% bootstrap over test patients "
        f"({comparison['bootstrap_resamples']} resamples).", "",
        f"**Recommended: {choice['model']}**, by the rule fixed before looking at the test "
        f"split: {choice['rule']}", "",
        "## Test split, overall", "",
        _row(["model", "accuracy", "macro-F1", "macro ROC-AUC", f"{covid} sensitivity",
              f"{covid} PPV", "eval macro-F1", "blessed"]),
        _row(["---"] * 8)]
    for name, m in models.items():
        test = m["test"]
        lines.append(_row([name, fmt(test["accuracy"]), fmt(test["macro_f1"]),
                           fmt(test["macro_auc"]), fmt(test["per_class"][covid]["sensitivity"]),
                           fmt(test["per_class"][covid]["ppv"]), fmt(m["eval"]["macro_f1"]),
                           "yes" if m["blessed"] else "no"]))
    differences = comparison["differences_vs_recommended"]
    if differences:
        lines += ["", f"Paired differences against {choice['model']} (same resampled patients; "
                  "an interval containing 0 means no demonstrated difference):", "",
                  _row(["model", "macro-F1 difference", "accuracy difference"]),
                  _row(["---"] * 3)]
        lines += [_row([name, _signed(d["macro_f1"]), _signed(d["accuracy"])])
                  for name, d in differences.items()]
    lines += ["", "## Test split, per class", "",
              _row(["model", "class", "sensitivity", "PPV", "F1", "ROC-AUC"]),
              _row(["---"] * 6)]
    for name, m in models.items():
        for cls in features.CLASS_NAMES:
            c = m["test"]["per_class"][cls]
            lines.append(_row([name, cls, fmt(c["sensitivity"]), fmt(c["ppv"]), fmt(c["f1"]),
                               fmt(c["auc"])]))
    lines += ["", "## Cost (CPU)", "",
              _row(["model", "parameters", "SavedModel (MB)", "latency per image, batch 1 "
                    "(median / p90 ms)"]), _row(["---"] * 4)]
    for name, m in models.items():
        cost = m["cost"]
        lines.append(_row([name, f"{cost['parameters']:,}", f"{cost['saved_model_mb']:.1f}",
                           f"{cost['latency_ms']['median']:.1f} / "
                           f"{cost['latency_ms']['p90']:.1f}"]))
    for feature in card_executor.SLICE_KEYS[:2]:
        lines += ["", f"## Test split by {feature.replace('_', ' ')}", "",
                  _row(["model", feature, "images", "accuracy", "macro-F1",
                        f"{covid} sensitivity"]), _row(["---"] * 6)]
        for name, m in models.items():
            for value, s in m["slices"][feature].items():
                lines.append(_row([name, value, str(s["n_images"]), fmt(s["accuracy"]),
                                   fmt(s["macro_f1"]),
                                   fmt(s["per_class"][covid]["sensitivity"])]))
    lines += ["", "## Figures", ""]
    for name in models:
        lines.append(f"![{name} confusion matrix](confusion_{name}.png) "
                     f"![{name} ROC curves](roc_{name}.png)")
    lines.append("")
    return "\n".join(lines)


def _signed(estimate: Dict) -> str:
    low, high = estimate["ci95"]
    if estimate["value"] is None:
        return "n/a"
    if low is None:
        return f"{estimate['value']:+.3f}"
    return f"{estimate['value']:+.3f} ({low:+.3f} to {high:+.3f})"
