"""`cxr compare`: the same pipeline for several candidates on one patient-level split.

A candidate is an architecture (`--models`) or a named set of `cxr run` settings
(`--variant NAME=FLAGS`, for ablations). Each runs as its own pipeline
(`<pipeline_name>-<name>`, served as `cxr_<name>`), exactly as `cxr run` would, so every
candidate gets its Evaluator verdict, Grad-CAM report and model card. The split depends only
on the patients, and predictions are paired across candidates by each test image's digest;
the comparison stops when the candidates were tested on different images.

The recommendation is made on the eval split, never on the test split: the test numbers
are reported once, for every candidate, with 95% intervals. `eval_only` leaves the test
split out of the report altogether, for choosing between recipes.
"""
import dataclasses
import json
import os
import statistics
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from evaluation import metrics, predictions, render
from models import features
from pipeline import runners, summary
from pipeline.config import PipelineConfig
from serving import layout

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
LATENCY_IMAGES = 20
LATENCY_WARMUP = 3


# Slices of the eval split shown next to the overall numbers (the ablation's adult targets).


@dataclasses.dataclass
class ModelResult:
    model: str
    config: PipelineConfig
    run: summary.RunSummary
    card: Dict
    test_rows: List[Dict[str, str]]
    test_probabilities: np.ndarray
    eval_metrics: Dict
    eval_slices: Dict


def candidate_config(base: PipelineConfig, name: str, **settings) -> PipelineConfig:
    """The pipeline of one candidate: its own name, root and served model name."""
    return dataclasses.replace(base, **settings, pipeline_name=f"{base.pipeline_name}-{name}",
                               serving_model_name=f"cxr_{name}", pipeline_root=None)


def model_config(base: PipelineConfig, model: str) -> PipelineConfig:
    return candidate_config(base, model, model=model)


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
    if not os.path.exists(config.metadata_path):
        raise RuntimeError(f"no run of {model} (pipeline {config.pipeline_name}) in "
                           f"{os.path.dirname(config.metadata_path)}")
    run = summary.summarize(config)
    if not run.model_card_dir:
        raise RuntimeError(f"the {model} run produced no model card")
    with open(os.path.join(run.model_card_dir, render.JSON_FILE)) as f:
        card = json.load(f)
    rows, probabilities = predictions.read_predictions(
        os.path.join(run.model_card_dir, render.PREDICTIONS_FILE))
    model_dir = layout.find_saved_model(run.model_uri)
    eval_rows, eval_probabilities = predictions.predict_split(model_dir, run.examples_uri,
                                                              "eval")
    labels = predictions.label_ids(eval_rows)
    patients = [r[features.PATIENT_ID_KEY] for r in eval_rows]
    eval_metrics = metrics.report(labels, eval_probabilities, patients, resamples)
    eval_slices = metrics.sliced_reports(labels, eval_probabilities, patients,
                                         {key: [r[key] for r in eval_rows]
                                          for key in metrics.SLICE_KEYS[:2]}, resamples)
    return ModelResult(model, config, run, card, rows, probabilities, eval_metrics, eval_slices)


def align_test_predictions(results: Sequence[ModelResult]) -> None:
    """Put every result's test rows in the first result's order, matched by image digest.

    Row order is whatever each run's TFRecords gave; pairing by position would compare
    different images whenever it differs. Stops when the sets of images differ.
    """
    digest = predictions.IMAGE_DIGEST_KEY

    def index(result):
        keys = [row[digest] for row in result.test_rows]
        if features.UNKNOWN in keys or len(set(keys)) != len(keys):
            raise RuntimeError(f"{result.model}'s predictions.csv does not identify its test "
                               f"images ({digest} missing or repeated); re-run its pipeline "
                               "with this version")
        return {key: i for i, key in enumerate(keys)}

    reference = index(results[0])
    for result in results[1:]:
        own = index(result)
        if own.keys() != reference.keys():
            raise RuntimeError(
                f"{result.model} was tested on other images than {results[0].model} "
                f"({len(own.keys() - reference.keys())} not in {results[0].model}'s test split, "
                f"{len(reference.keys() - own.keys())} missing): the runs used different data "
                "or splits")
        order = [own[key] for key in reference]
        result.test_rows = [result.test_rows[i] for i in order]
        result.test_probabilities = result.test_probabilities[order]


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
    labels = predictions.label_ids(base.test_rows)
    patients = [r[features.PATIENT_ID_KEY] for r in base.test_rows]
    return {
        result.model: {
            name: metrics.paired_difference(labels, result.test_probabilities,
                                            base.test_probabilities, patients, name,
                                            resamples).to_json()
            for name in ("macro_f1", "accuracy")}
        for result in results if result.model != reference}


def compare(base: PipelineConfig, candidates: Dict[str, PipelineConfig], out_dir: str,
            command: str, resamples: int = metrics.DEFAULT_RESAMPLES, run: bool = True,
            eval_only: bool = False, progress: bool = False, verbose: bool = False) -> Dict:
    """Run (or reuse from cache) every candidate's pipeline and write the comparison files.

    progress: a bar over the candidates on stderr (on a terminal) and each component's start
    and end.
    """
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    results = []
    for name, config in tqdm(candidates.items(), desc="models", unit="model",
                             disable=None if progress else True):
        if run:
            tqdm.write(f"[{name}] running pipeline '{config.pipeline_name}'")
            runners.run_local(config, report=tqdm.write if progress else None, verbose=verbose)
        results.append(_collect(name, config, resamples))
    if not eval_only:  # an eval-only comparison never looks at the test predictions
        align_test_predictions(results)
    choice = recommend(results, base.min_covid_recall)
    comparison = {
        "command": command,
        "data_dir": base.data_dir,
        "created": results[-1].card["created"],
        "versions": results[-1].card["versions"],
        "bootstrap_resamples": resamples,
        "eval_only": eval_only,
        "eval_images": results[0].eval_metrics["n_images"],
        "eval_patients": results[0].eval_metrics["n_patients"],
        "recommendation": choice,
        "models": {r.model: {
            "pipeline_name": r.config.pipeline_name,
            "settings": {**r.config.trainer_config, **_kept_epoch(r.card)},
            "eval": r.eval_metrics,
            "eval_slices": r.eval_slices,
        } for r in results},
    }
    if not eval_only:
        _add_test_results(comparison, results, choice, resamples)
        _write_figures(results, out_dir)
    with open(os.path.join(out_dir, COMPARISON_JSON), "w") as f:
        json.dump(comparison, f, indent=2)
    with open(os.path.join(out_dir, COMPARISON_MD), "w", encoding="utf-8") as f:
        f.write(render_comparison(comparison))
    return comparison


def _kept_epoch(card: Dict) -> Dict:
    model = card["model"]
    return {"best_epoch": model.get("best_epoch"), "epochs_run": model.get("epochs_run")}


def _add_test_results(comparison: Dict, results: Sequence[ModelResult], choice: Dict,
                      resamples: int) -> None:
    """The test split's numbers, costs and paired differences: reported once, never chosen on."""
    test_images = _test_images(results[0])
    comparison.update(test_images=results[0].card["test_metrics"]["n_images"],
                      test_patients=results[0].card["test_metrics"]["n_patients"],
                      differences_vs_recommended=paired_differences(results, choice["model"],
                                                                    resamples))
    for r in results:
        model_dir = layout.find_saved_model(r.run.model_uri)
        calibration = r.card.get("calibration") or {}
        comparison["models"][r.model].update({
            "blessed": r.card["blessed"],
            "trained_model": r.run.model_uri,
            "pushed_model_dir": r.run.pushed_model_dir,
            "model_card": os.path.join(r.run.model_card_dir, render.HTML_FILE),
            "test": r.card["test_metrics"],
            "slices": r.card["slices"],
            "calibration": {"temperature": calibration.get("temperature"),
                            "test_ece_before": (calibration.get("test_before") or {}).get("ece"),
                            "test_ece_after": (calibration.get("test_after") or {}).get("ece")},
            "cost": {
                "parameters": r.card["model"]["parameters"],
                "saved_model_mb": saved_model_bytes(model_dir) / 1e6,
                "latency_ms": cpu_latency_ms(model_dir, test_images),
            },
        })


def _test_images(result: ModelResult) -> List[bytes]:
    from serving.export import split_images
    return split_images(result.run.examples_uri, "test", LATENCY_IMAGES)


def _write_figures(results: Sequence[ModelResult], out_dir: str) -> None:
    for result in results:
        test = result.card["test_metrics"]
        render.plot_confusion_matrix(test["confusion_matrix"], result.model,
                                     os.path.join(out_dir, f"confusion_{result.model}.png"))
        render.plot_roc_curves(predictions.label_ids(result.test_rows),
                               result.test_probabilities,
                               {n: v["auc"] for n, v in test["per_class"].items()},
                               result.model, os.path.join(out_dir, f"roc_{result.model}.png"))


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _setting(value) -> str:
    return "default" if value is None else str(value)


def _recall_cells(report: Dict) -> List[str]:
    return [render.fmt(report["per_class"][name]["sensitivity"]) for name in features.CLASS_NAMES]


def _slice_rows(models: Dict, key: str, feature: str, values: Sequence[str] = ()) -> List[str]:
    """Per candidate and slice value: images, accuracy, macro-F1 and every class's recall."""
    lines = [_row(["candidate", feature, "images", "accuracy", "macro-F1"]
                  + [f"{name} recall" for name in features.CLASS_NAMES]),
             _row(["---"] * (5 + features.NUM_CLASSES))]
    for name, m in models.items():
        for value, report in m[key][feature].items():
            if values and value not in values:
                continue
            lines.append(_row([name, value, str(report["n_images"]), render.fmt(
                report["accuracy"]), render.fmt(report["macro_f1"])] + _recall_cells(report)))
    return lines


def render_comparison(comparison: Dict) -> str:
    fmt, models = render.fmt, comparison["models"]
    choice = comparison["recommendation"]
    tested = "" if comparison["eval_only"] else (
        f" Every candidate was tested on the same {comparison['test_images']} images of "
        f"{comparison['test_patients']} patients.")
    lines = [
        "# Model comparison", "",
        f"> {render.DISCLAIMER}", "",
        f"Made by `{comparison['command']}` on {comparison['created']} "
        f"({', '.join(f'{k} {v}' for k, v in comparison['versions'].items())}). "
        f"Eval split: {comparison['eval_images']} images of {comparison['eval_patients']} "
        f"patients.{tested} Intervals (95%): Wilson score intervals for accuracy, recall and "
        "PPV at the sample size left after allowing for patients with several images; a "
        f"bootstrap over patients ({comparison['bootstrap_resamples']} resamples) for F1 and "
        "ROC-AUC.", "",
        "## Candidates", "",
        _row(["candidate", "model", "image size", "epochs (kept)", "fine-tune layers",
              "label smoothing", "head learning rate", "dropout", "seed", "balance"]),
             _row(["---"] * 10)]
    for name, m in models.items():
        settings = m["settings"]
        kept = f" (epoch {settings['best_epoch']} of {settings['epochs_run']} run)" \
            if settings.get("best_epoch") else ""
        lines.append(_row([name, settings["model"], str(settings["image_size"]),
                           f"{settings['epochs']}{kept}",
                           *(_setting(settings.get(key)) for key in (
                               "fine_tune_layers", "label_smoothing", "head_learning_rate",
                               "dropout", "seed", "balance"))]))
    lines += ["", f"**Recommended: {choice['model']}**, by the rule fixed before looking at "
              f"the test split: {choice['rule']}", "",
              "## Eval split (where choices are made)", "",
              _row(["candidate", "accuracy", "macro-F1", "macro ROC-AUC"]
                   + [f"{name} recall" for name in features.CLASS_NAMES]),
              _row(["---"] * (4 + features.NUM_CLASSES))]
    for name, m in models.items():
        e = m["eval"]
        lines.append(_row([name, fmt(e["accuracy"]), fmt(e["macro_f1"]), fmt(e["macro_auc"])]
                          + _recall_cells(e)))
    lines += ["", "### Eval split, adult images", ""] + _slice_rows(
        models, "eval_slices", features.AGE_GROUP_KEY, ["adult"])
    lines += ["", "### Eval split by source", ""] + _slice_rows(
        models, "eval_slices", features.SOURCE_KEY)
    if not comparison["eval_only"]:
        lines += _render_test(comparison)
    lines.append("")
    return "\n".join(lines)


def _render_test(comparison: Dict) -> List[str]:
    fmt, models = render.fmt, comparison["models"]
    covid = features.CLASS_NAMES[features.COVID_CLASS_ID]
    choice = comparison["recommendation"]
    lines = ["", "## Test split, overall", "",
             _row(["candidate", "accuracy", "macro-F1", "macro ROC-AUC", f"{covid} sensitivity",
                   f"{covid} PPV", "ECE before / after scaling", "blessed"]),
             _row(["---"] * 8)]
    for name, m in models.items():
        test, ece = m["test"], m["calibration"]
        calibration = "n/a" if ece["test_ece_after"] is None else \
            f"{ece['test_ece_before']:.3f} / {ece['test_ece_after']:.3f}"
        lines.append(_row([name, fmt(test["accuracy"]), fmt(test["macro_f1"]),
                           fmt(test["macro_auc"]), fmt(test["per_class"][covid]["sensitivity"]),
                           fmt(test["per_class"][covid]["ppv"]), calibration,
                           "yes" if m["blessed"] else "no"]))
    differences = comparison["differences_vs_recommended"]
    if differences:
        lines += ["", f"Paired differences against {choice['model']} (same resampled patients; "
                  "an interval containing 0 means no demonstrated difference):", "",
                  _row(["candidate", "macro-F1 difference", "accuracy difference"]),
                  _row(["---"] * 3)]
        lines += [_row([name, _signed(d["macro_f1"]), _signed(d["accuracy"])])
                  for name, d in differences.items()]
    lines += ["", "## Test split, per class", "",
              _row(["candidate", "class", "sensitivity", "PPV", "F1", "ROC-AUC"]),
              _row(["---"] * 6)]
    for name, m in models.items():
        for cls in features.CLASS_NAMES:
            c = m["test"]["per_class"][cls]
            lines.append(_row([name, cls, fmt(c["sensitivity"]), fmt(c["ppv"]), fmt(c["f1"]),
                               fmt(c["auc"])]))
    lines += ["", "## Test split, adult images", ""] + _slice_rows(
        models, "slices", features.AGE_GROUP_KEY, ["adult"])
    for feature in metrics.SLICE_KEYS[:2]:
        lines += ["", f"## Test split by {feature.replace('_', ' ')}", ""] + _slice_rows(
            models, "slices", feature)
    lines += ["", "## Cost (CPU)", "",
              _row(["candidate", "parameters", "SavedModel (MB)", "latency per image, batch 1 "
                    "(median / p90 ms)"]), _row(["---"] * 4)]
    for name, m in models.items():
        cost = m["cost"]
        lines.append(_row([name, f"{cost['parameters']:,}", f"{cost['saved_model_mb']:.1f}",
                           f"{cost['latency_ms']['median']:.1f} / "
                           f"{cost['latency_ms']['p90']:.1f}"]))
    lines += ["", "## Figures", ""]
    for name in models:
        lines.append(f"![{name} confusion matrix](confusion_{name}.png) "
                     f"![{name} ROC curves](roc_{name}.png)")
    return lines


def _signed(estimate: Dict) -> str:
    low, high = estimate["ci95"]
    if estimate["value"] is None:
        return "n/a"
    if low is None:
        return f"{estimate['value']:+.3f}"
    return f"{estimate['value']:+.3f} ({low:+.3f} to {high:+.3f})"
