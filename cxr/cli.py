"""`cxr`: thin command line over pipeline/ and components/.

User errors end with one line on stderr and exit status 2; failures inside the pipeline
(for example data anomalies) end with one line and status 1. --debug shows tracebacks.
"""
import argparse
import os
import sys
from typing import List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import models  # noqa: E402,F401  (before TensorFlow: selects Keras 2)
from models import builders, features  # noqa: E402


class UsageError(Exception):
    """Bad flags or inputs: reported in one line with exit status 2."""


def _split_percentages(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 70,15,15, got {text!r}")


def _add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="run the TFX pipeline locally on a data directory")
    run.add_argument("--data-dir", required=True,
                     help="a folder per class, or a folder with manifest.csv")
    run.add_argument("--output-dir", default="outputs",
                     help="pipeline root, metadata and serving_model/ go here")
    run.add_argument("--model", choices=builders.MODEL_NAMES, default="mobilenet_v2")
    run.add_argument("--epochs", type=int, default=10)
    run.add_argument("--image-size", type=int, default=features.DEFAULT_IMAGE_SIZE)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--split", type=_split_percentages, default=(70, 15, 15),
                     metavar="TRAIN,EVAL,TEST", help="patient-level split in percent")
    run.add_argument("--train-steps", type=int, default=None,
                     help="cap on steps per epoch (for quick checks)")
    run.add_argument("--min-covid-recall", type=float, default=0.8)
    run.add_argument("--min-macro-auc", type=float, default=0.8)
    run.add_argument("--max-regression", type=float, default=0.0,
                     help="allowed drop in macro ROC-AUC against the last blessed model")
    run.add_argument("--pipeline-name", default="cxr")
    run.add_argument("--serving-model-name", default="cxr_classifier")
    run.add_argument("--verbose", action="store_true", help="show TFX and Beam logs")


def _check_output_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output directory {path}: {error.strerror}")
    if not os.access(path, os.W_OK):
        raise UsageError(f"output directory is not writable: {path}")


def _run(args: argparse.Namespace) -> int:
    if not args.verbose:
        _quiet_libraries()
    from components.image_example_gen import ingest
    from pipeline import runners, summary
    from pipeline.config import PipelineConfig

    try:
        config = PipelineConfig(
            data_dir=args.data_dir, output_dir=args.output_dir, pipeline_name=args.pipeline_name,
            model=args.model, serving_model_name=args.serving_model_name, epochs=args.epochs,
            image_size=args.image_size, batch_size=args.batch_size,
            split_percentages=args.split, min_covid_recall=args.min_covid_recall,
            min_macro_auc=args.min_macro_auc, max_regression=args.max_regression,
            train_steps=args.train_steps)
        records = ingest.scan(config.data_dir)
    except (ValueError, ingest.DataError) as error:
        raise UsageError(str(error))
    _check_output_dir(config.output_dir)
    print(f"Running pipeline '{config.pipeline_name}' on {len(records)} images from "
          f"{config.data_dir} (model {config.model}, {config.epochs} epoch(s), "
          f"{config.image_size}px)", flush=True)
    runners.run_local(config)
    result = summary.summarize(config)
    print("\n".join(summary.format_summary(result, config)))
    return 0


def _quiet_libraries() -> None:
    """TFX, Beam, TF and TFMA log hundreds of lines per run; keep the terminal readable."""
    import logging
    import warnings

    import apache_beam.utils.annotations  # noqa: F401  (it sets warnings to "always" on import)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    for name in ("tensorflow", "apache_beam"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cxr", description="Chest X-ray TFX pipeline (research and education only; "
                                "not for clinical use).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(commands)
    args = parser.parse_args(argv)
    handlers = {"run": _run}
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
