"""`cxr`: thin command line over pipeline/ and components/.

User errors end with one line on stderr and exit status 2; failures inside the pipeline
(for example data anomalies) end with one line and status 1. --debug shows tracebacks.
"""
import argparse
import dataclasses
import os
import re
import sys
import warnings
from typing import Dict, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Google Cloud client libraries warn about Python 3.11's end of life on import; an error
# message must stay one line.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\.")
import models  # noqa: E402,F401  (before TensorFlow: selects Keras 2)
from explain import gradcam_defaults  # noqa: E402
from models import architectures, balance, features  # noqa: E402


class UsageError(Exception):
    """Bad flags or inputs: reported in one line with exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    """For flags parsed inside a command (--variant): errors become one UsageError line."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


DEFAULT_COMPARED_MODELS = "baseline_cnn,mobilenet_v2,efficientnet_lite0"


def _split_percentages(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 70,15,15, got {text!r}")


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Flags named after PipelineConfig fields; unset flags fall back to CXR_* or defaults."""
    parser.epilog = ("Every setting can also come from the environment as CXR_<SETTING>, e.g. "
                     "CXR_PIPELINE_ROOT or CXR_IMAGE; flags win. Defaults: pipeline/config.py.")
    parser.add_argument("--data-dir",
                        help="a folder per class, or a folder with manifest.csv")
    parser.add_argument("--output-dir",
                        help="local runs: pipeline root, metadata and serving_model/ go here")
    parser.add_argument("--pipeline-root", help="default: OUTPUT_DIR/pipelines/PIPELINE_NAME")
    parser.add_argument("--serving-dir", help="Pusher's target; default: OUTPUT_DIR/serving_model")
    parser.add_argument("--model", choices=architectures.MODEL_NAMES)
    parser.add_argument("--weights", metavar="PATH|imagenet|none",
                        help="backbone start: default the bundled ImageNet weights "
                             "(mobilenet_v2, efficientnet_lite0) or Keras' download "
                             "(efficientnet_b0, resnet50); none = random init")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--fine-tune-layers", type=int, metavar="N",
                        help="backbone layers, from the top, trained in the fine-tuning phase "
                             "(more than the backbone has: all of it)")
    parser.add_argument("--label-smoothing", type=float, metavar="E",
                        help="cross-entropy label smoothing during training")
    parser.add_argument("--head-learning-rate", type=float, metavar="LR",
                        help="learning rate of the first phase, when only the head trains")
    parser.add_argument("--dropout", type=float, metavar="P",
                        help="dropout before the classification layer")
    parser.add_argument("--seed", type=int,
                        help="training seed (head weights, shuffling, augmentation; not the "
                             "split): runs with one seed repeat, so compare seeds for spread")
    parser.add_argument("--balance", choices=balance.MODES,
                        help="loss weights: each class the same total (class, the default), "
                             "and within a class sources by the square root of their count "
                             "(class_source)")
    parser.add_argument("--split", dest="split_percentages", type=_split_percentages,
                        metavar="TRAIN,EVAL,TEST", help="patient-level split in percent")
    parser.add_argument("--train-steps", type=int,
                        help="cap on steps per epoch (for quick checks)")
    parser.add_argument("--tune", action="store_true",
                        help="run the Tuner (random search on the eval split) before Trainer")
    parser.add_argument("--tune-trials", type=int, metavar="N", help="Tuner trials (default 4)")
    parser.add_argument("--tune-epochs", type=int, metavar="N", help="epochs per trial (default 3)")
    parser.add_argument("--min-covid-recall", type=float)
    parser.add_argument("--min-macro-auc", type=float)
    parser.add_argument("--max-regression", type=float,
                        help="allowed drop in macro ROC-AUC against the last blessed model")
    parser.add_argument("--pipeline-name")
    parser.add_argument("--serving-model-name")
    _add_ingest_flags(parser)
    beam = parser.add_argument_group("Beam (StatisticsGen, Transform, Evaluator, ExampleGen)")
    beam.add_argument("--beam-runner", help="direct (default) or dataflow")
    beam.add_argument("--beam-direct-workers", type=int, metavar="N",
                      help="DirectRunner worker processes (multi_processing when N > 1)")
    beam.add_argument("--beam-arg", dest="extra_beam_args", action="append", metavar="ARG",
                      help="one more Beam pipeline argument (repeatable)")
    cloud = parser.add_argument_group("Google Cloud (Dataflow, Vertex AI)")
    cloud.add_argument("--image", help="the pipeline container image (see Dockerfile)")
    cloud.add_argument("--project", help="GCP project for Dataflow and Vertex AI Training")
    cloud.add_argument("--region")
    cloud.add_argument("--dataflow-temp-location", help="default: PIPELINE_ROOT/beam-temp")
    cloud.add_argument("--dataflow-machine-type")
    cloud.add_argument("--dataflow-max-workers", type=int)
    cloud.add_argument("--vertex-training", action="store_true",
                       help="run the Trainer as a Vertex AI Training job of --image")
    cloud.add_argument("--vertex-training-machine-type")
    cloud.add_argument("--vertex-accelerator-type", metavar="TYPE",
                       help="accelerator of each Vertex AI Training replica (Trainer and "
                            "Tuner), e.g. NVIDIA_TESLA_T4")
    cloud.add_argument("--vertex-accelerator-count", type=int, metavar="N")
    cloud.add_argument("--vertex-endpoint", metavar="NAME",
                       help="also upload the blessed model to the Vertex AI Model Registry and "
                            "deploy it to this endpoint (TFX's Vertex Pusher)")
    cloud.add_argument("--vertex-serving-image", metavar="URI",
                       help="TensorFlow prediction image for --vertex-endpoint")
    cloud.add_argument("--vertex-serving-machine-type")
    cloud.add_argument("--dataflow-service-account", metavar="EMAIL",
                       help="identity of the Dataflow workers")
    cloud.add_argument("--dataflow-subnetwork", metavar="regions/REGION/subnetworks/NAME")


def _add_ingest_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the file checks shared by `cxr run`, `cxr compile` and `cxr check-data`."""
    ingest = parser.add_argument_group("Ingestion checks (components/image_example_gen)")
    ingest.add_argument("--min-image-side", type=int, metavar="PX",
                        help="quarantine images whose shorter side is below this")
    ingest.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="refuse larger images before decoding them (decompression bombs)")
    ingest.add_argument("--max-quarantined-fraction", type=float, metavar="F",
                        help="stop when more than this share of the files is quarantined")
    ingest.add_argument("--ignore-unknown-labels", action="store_true",
                        help="quarantine files whose label or class folder is not a known "
                             "class instead of stopping")


def _add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="run the TFX pipeline on a data directory",
                              argument_default=argparse.SUPPRESS)
    run.add_argument("--engine", choices=("local",), default="local",
                     help="LocalDagRunner (Beam DirectRunner unless --beam-runner dataflow)")
    _add_pipeline_flags(run)


def _add_compile_parser(commands) -> None:
    compile_ = commands.add_parser(
        "compile", help="write a Kubeflow Pipelines v2 / Vertex AI pipeline spec (offline)",
        argument_default=argparse.SUPPRESS)
    compile_.add_argument("--engine", choices=("vertex",), default="vertex")
    compile_.add_argument("--output", required=True, help="the spec to write (.json or .yaml)")
    _add_pipeline_flags(compile_)


def _add_compare_parser(commands) -> None:
    compare = commands.add_parser(
        "compare", help="train several architectures or recipes on the same split and compare "
                        "them", argument_default=argparse.SUPPRESS)
    compare.add_argument("--models", help="comma-separated, from: " + ", ".join(
        architectures.MODEL_NAMES) + f" (default {DEFAULT_COMPARED_MODELS} unless --variant is "
        "given)")
    compare.add_argument("--variant", dest="variants", action="append", metavar="NAME=FLAGS",
                         help="one more candidate: `cxr run` settings under a name, e.g. "
                              "'ft-all=--fine-tune-layers 200 --image-size 320' (repeatable)")
    compare.add_argument("--eval-only", action="store_true", default=False,
                         help="report the eval split only (for choosing between recipes; the "
                              "test split is reported once, by a comparison without this)")
    compare.add_argument("--no-run", action="store_true", default=False,
                         help="compare the latest finished run of each candidate's pipeline "
                              "as it is, without running anything")
    compare.add_argument("--out", help="comparison.md/.json and figures; default "
                                       "OUTPUT_DIR/comparison")
    compare.add_argument("--bootstrap-resamples", type=int, default=1000,
                         help="resamples of patients for the F1 and ROC-AUC intervals")
    _add_pipeline_flags(compare)


# Settings that name the data, the split or where a candidate's run lives: not a recipe.
_NOT_VARIANT_SETTINGS = ("data_dir", "output_dir", "pipeline_root", "serving_dir",
                         "pipeline_name", "serving_model_name", "split_percentages")


def _variant_settings(spec: str) -> Tuple[str, Dict]:
    """NAME=FLAGS -> (NAME, the PipelineConfig fields those `cxr run` flags set)."""
    import shlex

    name, _, flags = spec.partition("=")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name.strip()):
        raise UsageError(f"--variant {spec!r}: give NAME=FLAGS with a name of lower-case "
                         "letters, digits, '-' and '_'")
    parser = _ArgumentParser(prog=f"cxr compare --variant {name}",
                             argument_default=argparse.SUPPRESS)
    _add_pipeline_flags(parser)
    settings = vars(parser.parse_args(shlex.split(flags)))
    fixed = sorted(set(settings) & set(_NOT_VARIANT_SETTINGS))
    if fixed:
        raise UsageError(f"--variant {name}: {', '.join(fixed)} must be the same for every "
                         "candidate; give it outside --variant")
    return name.strip(), settings


def _compare(args: argparse.Namespace) -> int:
    import shlex

    from pipeline import compare

    if "model" in vars(args) or "weights" in vars(args):
        raise UsageError("compare trains each of --models from its default weights; "
                         "--model and --weights are for `cxr run` (or inside --variant)")
    variants = dict(_variant_settings(spec) for spec in getattr(args, "variants", []))
    if len(variants) != len(getattr(args, "variants", [])):
        raise UsageError("--variant names must differ")
    models_text = getattr(args, "models", "" if variants else DEFAULT_COMPARED_MODELS)
    model_names = [m.strip() for m in models_text.split(",") if m.strip()]
    unknown = [m for m in model_names if m not in architectures.MODEL_NAMES]
    names = model_names + list(variants)
    if unknown or len(set(names)) < 2 or len(set(names)) != len(names):
        raise UsageError(f"compare needs two or more different candidates: --models names "
                         f"from {', '.join(architectures.MODEL_NAMES)} and --variant names; got "
                         f"{', '.join(names) or 'none'}")
    if args.bootstrap_resamples < 100:
        raise UsageError("--bootstrap-resamples must be at least 100")
    config = _config_from_args(args)
    try:
        candidates = {model: compare.model_config(config, model) for model in model_names}
        candidates.update({name: compare.candidate_config(config, name, **settings)
                           for name, settings in variants.items()})
    except ValueError as error:
        raise UsageError(str(error))
    _check_inputs(config, [(c.model, c.weights) for c in candidates.values()])
    _check_output_dir(config.output_dir)
    out_dir = getattr(args, "out", None) or os.path.join(config.output_dir, "comparison")
    _check_output_dir(out_dir)
    comparison = compare.compare(config, candidates, out_dir, shlex.join(["cxr"] + args.argv),
                                 args.bootstrap_resamples, run=not args.no_run,
                                 eval_only=args.eval_only, progress=True, verbose=args.verbose)
    split = "eval" if args.eval_only else "test"
    for name, result in comparison["models"].items():
        scores = result[split]
        print(f"{name:<20} {split} accuracy {scores['accuracy']['value']:.3f}, macro-F1 "
              f"{scores['macro_f1']['value']:.3f}"
              + ("" if args.eval_only else
                 f", blessed: {'yes' if result['blessed'] else 'no'}"))
    print(f"Recommended (chosen on the eval split): {comparison['recommendation']['model']}")
    print(f"Wrote {os.path.join(out_dir, compare.COMPARISON_MD)} and {compare.COMPARISON_JSON}")
    return 0


def _add_submit_parser(commands) -> None:
    submit = commands.add_parser("submit", help="submit a compiled spec to Vertex AI Pipelines")
    submit.add_argument("--pipeline", required=True, help="the spec written by `cxr compile`")
    submit.add_argument("--project", help="default: CXR_PROJECT")
    submit.add_argument("--region", help="default: CXR_REGION, else us-central1")
    submit.add_argument("--service-account", help="default: the Compute Engine default one")
    submit.add_argument("--no-cache", action="store_true",
                        help="re-run every step (needed after changing images in place)")
    submit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a runtime parameter for this run (repeatable): data_root, epochs, "
                             "min_covid_recall, min_macro_auc, max_regression")


def _add_run_spec_parser(commands) -> None:
    run_spec = commands.add_parser(
        "run-spec", help="execute a compiled Vertex AI spec offline, task by task (on an "
                         "emulated Cloud Storage with --emulate-gcs)")
    run_spec.add_argument("--pipeline", required=True, help="the spec written by `cxr compile`")
    run_spec.add_argument("--emulate-gcs", action="store_true",
                          help="serve every gs:// bucket the spec names from an emulated "
                               "Cloud Storage on loopback")
    run_spec.add_argument("--stage", action="append", default=[], metavar="LOCAL_DIR=gs://URI",
                          help="copy a local folder to gs://URI before the run (repeatable)")
    run_spec.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                          help="a runtime parameter of the spec (repeatable)")
    run_spec.add_argument("--output-dir", default=os.path.join("outputs", "run-spec"),
                          help="task logs, and with --emulate-gcs a copy of the buckets "
                               "after the run (default outputs/run-spec)")


def _parameters(pairs: Sequence[str]) -> dict:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE")
        values[name] = value
    return values


def _require(command: str, extra: str) -> None:
    """One line naming the install command when an optional part (setup.py's extras) is
    missing, before any work starts."""
    from cxr.requirements import missing_extra

    problem = missing_extra(extra)
    if problem:
        raise UsageError(f"{command} {problem}")


def _run_spec(args: argparse.Namespace) -> int:
    _require("cxr run-spec", "vertex")
    _quiet_libraries()
    from pipeline import spec_runner

    try:
        run = spec_runner.run_offline(args.pipeline, _parameters(args.param), args.stage,
                                      args.emulate_gcs, args.output_dir,
                                      echo=lambda line: print(line, flush=True))
    except spec_runner.SpecRunError as error:
        raise UsageError(str(error))
    total = sum(task.seconds for task in run.tasks)
    print(f"Ran {len(run.tasks)} tasks in {total:.0f} s (job {run.job_id})")
    if not run.pushed_model:
        print("cxr: run-spec: no model was pushed (not blessed, or the spec has no Pusher)",
              file=sys.stderr)
        return 1
    print(f"Pushed model: {run.pushed_model}")
    return 0


def _config_from_args(args: argparse.Namespace):
    """PipelineConfig from the flags given, CXR_* variables and defaults (in that order)."""
    from pipeline.config import PipelineConfig

    fields = {field.name for field in dataclasses.fields(PipelineConfig)}
    try:
        return PipelineConfig.from_settings({k: v for k, v in vars(args).items() if k in fields})
    except ValueError as error:
        raise UsageError(str(error))


def _check_output_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output directory {path}: {error.strerror}")
    if not os.access(path, os.W_OK):
        raise UsageError(f"output directory is not writable: {path}")


def _check_inputs(config, models_and_weights: Sequence[Tuple[str, Optional[str]]]):
    """Fail before any pipeline step on unreadable data, a missing class or unusable weights."""
    from imaging import ingest
    from models import builders

    try:
        scanned = ingest.scan(config.data_dir, config.ignore_unknown_labels)
        for model, weights in models_and_weights:
            builders.check_weights_available(model, weights)
    except (ingest.DataError, builders.WeightsError) as error:
        raise UsageError(str(error))
    if scanned.empty_classes():
        raise UsageError(f"no files of class {', '.join(scanned.empty_classes())} in "
                         f"{config.data_dir}; every class of "
                         f"{', '.join(features.CLASS_NAMES)} needs images")
    return scanned


def _run(args: argparse.Namespace) -> int:
    from pipeline import progress, runners, summary

    config = _config_from_args(args)
    scanned = _check_inputs(config, [(config.model, config.weights)])
    if "://" in config.output_dir:
        raise UsageError("--output-dir holds the local ML Metadata database and must be a local "
                         "folder; put --pipeline-root and --serving-dir on Cloud Storage instead")
    _check_output_dir(config.output_dir)
    print(f"Running pipeline '{config.pipeline_name}' on {scanned.files_seen} files from "
          f"{config.data_dir} (model {config.model}, {config.epochs} epoch(s), "
          f"{config.image_size}px)", flush=True)
    steps = runners.run_local(config, report=lambda line: print(line, flush=True),
                              verbose=args.verbose)
    result = summary.summarize(config)
    print("\n".join(progress.summary_lines(steps) + summary.format_summary(result, config)))
    return 0


def _add_check_data_parser(commands) -> None:
    check = commands.add_parser(
        "check-data", help="run ingestion's file checks alone; --report writes the quarantine "
                           "report",
        argument_default=argparse.SUPPRESS)
    check.add_argument("--data-dir", required=True,
                       help="a folder per class, or a folder with manifest.csv")
    check.add_argument("--report", default=None, metavar="PATH",
                       help="quarantine report to write: .json (everything, skipped files "
                            "included) or .csv (one row per rejected file); default: none")
    _add_ingest_flags(check)


def _check_data(args: argparse.Namespace) -> int:
    """The executor's checks without TFX: exit 0 when `cxr run` would accept the data."""
    from imaging import ingest

    config = _config_from_args(args)
    if args.report:
        _check_output_dir(os.path.dirname(os.path.abspath(args.report)))
    try:
        _, report = ingest.check_data(config.data_dir, config.ingest_options, progress=True)
    except ingest.DataError as error:
        raise UsageError(str(error))
    if args.report:
        report.write(args.report)
    print("\n".join(report.summary_lines()))
    if args.report:
        print(f"Quarantine report: {args.report}")
    report.raise_on_problems(args.report)
    return 0


def _compile(args: argparse.Namespace) -> int:
    _require("cxr compile", "vertex")
    from pipeline import runners

    config = _config_from_args(args)
    _check_output_dir(os.path.dirname(os.path.abspath(args.output)))
    try:
        runners.compile_vertex(config, args.output)
    except ValueError as error:
        raise UsageError(str(error))
    print(f"Wrote {args.output}: pipeline '{config.pipeline_name}' for Vertex AI Pipelines, "
          f"image {config.image}, root {config.pipeline_root}, Beam {config.beam_runner}"
          f"{', Trainer on Vertex AI Training' if config.vertex_training else ''}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    _require("cxr submit", "vertex")
    from pipeline import runners
    from pipeline.config import PipelineConfig, setting_source, settings_from_env

    try:
        environment = settings_from_env()
    except ValueError as error:
        raise UsageError(str(error))
    project = args.project or environment.get("project")
    region = args.region or environment.get("region", PipelineConfig.region)
    if not project:
        raise UsageError(f"no GCP project: pass {setting_source('project')}")
    if not os.path.isfile(args.pipeline):
        raise UsageError(f"pipeline spec not found: {args.pipeline}")
    try:
        job_name = runners.submit_vertex(args.pipeline, project, region, args.service_account,
                                         enable_caching=not args.no_cache,
                                         parameters=_parameters(args.param))
    except ValueError as error:
        raise UsageError(str(error))
    print(f"Submitted {job_name}; follow it in the Vertex AI console (Pipelines, {region}).")
    return 0


def _quiet_libraries() -> None:
    """TFX, Beam, TF and TFMA log hundreds of lines per run; keep the terminal readable."""
    import logging
    import warnings

    warnings.simplefilter("ignore")  # Google Cloud libraries warn while TFX imports them
    os.environ["PYTHONWARNINGS"] = "ignore"  # ... and in Beam's multi_processing workers
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    for name in ("tensorflow", "apache_beam"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _add_predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict", help="classify images with TensorFlow Serving (or `cxr serve`)")
    server = predict.add_mutually_exclusive_group(required=True)
    server.add_argument("--server", metavar="HOST:PORT", help="gRPC address (TF Serving: 8500)")
    server.add_argument("--rest", metavar="URL", help="REST base URL, e.g. http://HOST:8501")
    predict.add_argument("--model-name", required=True, help="the name the model is served under")
    predict.add_argument("--version", type=int, default=None, help="default: the newest")
    predict.add_argument("--timeout", type=float, default=10.0, help="deadline per request (s)")
    predict.add_argument("--retries", type=int, default=3,
                         help="retries after UNAVAILABLE or DEADLINE_EXCEEDED")
    predict.add_argument("--batch-size", type=int, default=8, help="images per request")
    predict.add_argument("--json", action="store_true", help="print JSON instead of lines")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="JPEG, PNG or DICOM files (prepared as ingestion prepares them)")


def _predict(args: argparse.Namespace) -> int:
    import json

    from serving import client, rest

    settings = dict(version=args.version, timeout_seconds=args.timeout, retries=args.retries,
                    batch_size=args.batch_size)
    try:
        if args.server:
            with client.PredictionClient(args.server, args.model_name, **settings) as grpc_client:
                grpc_client.signature()
                predictions = grpc_client.predict_files(args.images)
        else:
            predictions = rest.RestClient(args.rest, args.model_name,
                                          **settings).predict_files(args.images)
    except ValueError as error:
        raise UsageError(str(error))
    except client.ServingError as error:
        if error.kind == "usage":
            raise UsageError(str(error))
        print(f"cxr: predict failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"image": path, "predicted_class": p.predicted_class,
                           "probabilities": p.probabilities,
                           "chest_xray_score": p.chest_xray_score,
                           "is_chest_xray": p.is_chest_xray}
                          for path, p in zip(args.images, predictions)], indent=2))
        return 0
    for path, prediction in zip(args.images, predictions):
        print(f"{path}: {client.describe(prediction)}")
    return 0


def _add_serve_parser(commands) -> None:
    from serving.allocator import DEFAULT_MALLOC_ARENAS, ENV_VARIABLE
    from serving.limits import Limits

    serve = commands.add_parser(
        "serve", help="development stand-in for TF Serving on loopback: gRPC Predict, "
                      "GetModelMetadata and GetModelStatus, and its REST API")
    serve.add_argument("--model-dir", required=True,
                       help="SERVING_DIR/<model_name>, the folder of numbered versions")
    serve.add_argument("--model-name", default=None, help="default: the folder's name")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (TF Serving: 8500)")
    serve.add_argument("--rest-port", type=int, default=None,
                       help="also answer TF Serving's REST API on this port (TF Serving: 8501)")
    serve.add_argument("--max-batch-size", type=int, default=Limits.max_batch_size,
                       help="most images one request may hold")
    serve.add_argument("--max-request-mb", type=float,
                       default=Limits.max_request_bytes / 2 ** 20,
                       help="largest request (gRPC message or REST body) in MB")
    serve.add_argument("--malloc-arenas", type=int, default=DEFAULT_MALLOC_ARENAS, metavar="N",
                       help=f"glibc malloc arenas of the server process (default "
                            f"{DEFAULT_MALLOC_ARENAS}: with glibc's default, up to 8 per core "
                            f"(0), its memory grows in steps under long load; see "
                            f"docs/benchmarks.md); {ENV_VARIABLE} in the environment wins")


def _serve(args: argparse.Namespace) -> int:
    from serving import allocator

    try:  # before TensorFlow and gRPC start their threads
        arenas = allocator.limit_malloc_arenas(args.malloc_arenas)
    except ValueError as error:
        raise UsageError(str(error))
    from serving import layout, server

    try:
        limits = server.Limits(max_batch_size=args.max_batch_size,
                               max_request_bytes=int(args.max_request_mb * 2 ** 20))
        running = server.start_server(args.model_dir, args.model_name, args.port,
                                      rest_port=args.rest_port, limits=limits)
    except (layout.ModelDirError, OSError, ValueError) as error:
        raise UsageError(str(error))
    servable = running.servable
    print(arenas, file=sys.stderr, flush=True)
    rest = (f" and {server.LOOPBACK}:{running.rest_port} (REST)"
            if running.rest_port is not None else "")
    print(f"Serving model {servable.model_name!r} version {servable.version} from "
          f"{servable.version_dir} on {server.LOOPBACK}:{running.grpc_port} (gRPC){rest}. A "
          "development stand-in for TensorFlow Serving, not for production; Ctrl-C stops it.",
          flush=True)
    try:
        running.wait()
    except KeyboardInterrupt:
        running.stop(grace=1)
    return 0


def _add_export_parser(commands, selected: bool) -> None:
    export = commands.add_parser(
        "export", help="ONNX or TFLite export of a pushed model, checked on the test split")
    if not selected:  # its flags need serving.export, which imports TensorFlow
        return
    from serving.export import FORMATS

    export.add_argument("--model-dir", required=True,
                        help="a pushed version: SERVING_DIR/<model_name>/<version>")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--output", required=True, help="file to write")
    export.add_argument("--examples", required=True,
                        help="ImageExampleGen output (PIPELINE_ROOT/ImageExampleGen/examples/"
                             "<id>): Split-test checks the export, Split-train calibrates int8")


def _export(args: argparse.Namespace) -> int:
    import logging

    from serving import export, layout

    if args.format == "onnx":
        _require("cxr export --format onnx", "export")
    if not args.verbose:
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        report = export.export(args.model_dir, args.format, args.output, args.examples,
                               progress=True)
    except (export.ExportError, layout.ModelDirError) as error:
        raise UsageError(str(error))
    print(report.summary())
    print(f"Wrote {args.output} and {export.parity_report_path(args.output)}")
    return 0


def _add_gradcam_parser(commands) -> None:
    gradcam = commands.add_parser(
        "gradcam", help="Grad-CAM heatmaps and faithfulness figures for image files")
    gradcam.add_argument("images", nargs="+", metavar="IMAGE",
                         help="JPEG, PNG or DICOM files (prepared as ingestion prepares them)")
    gradcam.add_argument("--model", required=True, metavar="SERVING_MODEL_DIR",
                         help="a pushed version, SERVING_DIR/<model_name> (newest version) "
                              "or the Trainer's model artifact")
    gradcam.add_argument("--out", required=True, metavar="DIR",
                         help="report.html, summary.json and the PNGs go here")
    gradcam.add_argument("--target-layer", default=None,
                         help="e.g. backbone/out_relu; default: the last conv feature map")
    gradcam.add_argument("--alpha", type=float, default=gradcam_defaults.OVERLAY_ALPHA,
                         help="heatmap opacity in overlays")
    gradcam.add_argument("--steps", type=int, default=gradcam_defaults.STEPS,
                         help="steps of the deletion and insertion curves")


def _gradcam(args: argparse.Namespace) -> int:
    from explain import gradcam_report

    _check_output_dir(args.out)
    try:
        options = gradcam_report.Options(overlay_alpha=args.alpha, steps=args.steps,
                                         target_layer=args.target_layer)
        summary = gradcam_report.explain_files(args.images, args.model, args.out, options,
                                               progress=True)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error))
    print("\n".join(gradcam_report.summary_lines(summary)))
    print(f"Report: {os.path.join(args.out, gradcam_report.REPORT_FILE)} (research and education "
          "only; not for clinical use)")
    return 0


def _add_app_parser(commands, selected: bool) -> None:
    app = commands.add_parser(
        "app", help="web demo (Streamlit): upload a chest X-ray, see the prediction, its "
                    "Grad-CAM and the model card")
    if not selected:  # its flags need app.launch, which imports TensorFlow
        return
    from app import launch

    launch.add_model_arguments(app)
    app.add_argument("--port", type=int, default=launch.DEFAULT_PORT)
    app.add_argument("--address", default=launch.DEFAULT_ADDRESS,
                     help="interface to listen on (default: loopback only)")


def _app(args: argparse.Namespace) -> int:
    """Checks the model and flags, then runs the Streamlit server until Ctrl-C."""
    _require("cxr app", "app")
    from app import launch
    from serving import layout

    try:
        options = launch.check_options(launch.AppOptions(args.model_dir, args.server,
                                                         args.model_name))
        if options.model_dir:
            model = layout.resolve(options.model_dir, options.model_name)
            print(f"Model {model.name!r} version {model.version} from {model.directory}")
    except (launch.LaunchError, layout.ModelDirError) as error:
        raise UsageError(str(error))
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    print(f"Starting the web demo on http://{args.address}:{args.port} (research and "
          "education only; not for clinical use). Ctrl-C stops it.", flush=True)
    launch.run_streamlit(launch.streamlit_arguments(options, args.port, args.address))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cxr", description="Chest X-ray TFX pipeline (research and education only; "
                                "not for clinical use).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow, TFX and Beam logs")
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(commands)
    _add_compare_parser(commands)
    _add_compile_parser(commands)
    _add_submit_parser(commands)
    _add_run_spec_parser(commands)
    _add_predict_parser(commands)
    _add_serve_parser(commands)
    _add_export_parser(commands, selected == "export")
    _add_gradcam_parser(commands)
    _add_check_data_parser(commands)
    _add_app_parser(commands, selected == "app")
    for subcommand in commands.choices.values():  # also accepted after the subcommand
        subcommand.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help="show tracebacks")
        subcommand.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                                help="show TensorFlow, TFX and Beam logs")
    args = parser.parse_args(argv)
    args.argv = argv
    if not args.verbose:
        _quiet_libraries()
    handlers = {"run": _run, "compare": _compare, "compile": _compile, "submit": _submit,
                "run-spec": _run_spec,
                "gradcam": _gradcam, "check-data": _check_data, "predict": _predict,
                "serve": _serve, "export": _export, "app": _app}
    try:
        return handlers[args.command](args)
    except UsageError as error:
        if args.debug:
            raise
        print(f"cxr: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001  one line for the user; --debug for the trace
        if args.debug:
            raise
        print(f"cxr: {args.command} failed: {_root_message(error)}", file=sys.stderr)
        return 1


def _root_message(error: BaseException) -> str:
    """The innermost cause's message: TFX wraps executor errors in its own exceptions."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {error}".splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
