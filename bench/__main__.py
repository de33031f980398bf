"""`python -m bench` (`make bench`): every benchmark, bench/results/latest.json and the table.

With no --data-dir it uses the shared development set (../shared/data/cxr3 beside the
repository) and falls back to the embedded sample, saying so, where that does not exist.
"""
import argparse
import os
import sys
import tempfile
from typing import List, Optional

import bench  # noqa: F401  (before TensorFlow: selects Keras 2)
from bench import e2e, measure, report, serving_bench, throughput
from models import architectures

SHARED_DATA_DIR = os.path.join(os.path.dirname(measure.REPO_ROOT), "shared", "data", "cxr3")
SAMPLE_DATA_DIR = os.path.join(measure.REPO_ROOT, "data", "sample")
RESULTS_FILE = os.path.join(measure.REPO_ROOT, "bench", "results", "latest.json")
DOC_FILE = os.path.join(measure.REPO_ROOT, "docs", "benchmarks.md")


def default_data_dir() -> tuple:
    """(data dir, note): the shared development set, else the embedded sample."""
    if os.path.isdir(SHARED_DATA_DIR):
        return SHARED_DATA_DIR, ""
    return SAMPLE_DATA_DIR, (f"{SHARED_DATA_DIR} not found: measured on the 120-image "
                             "embedded sample, not the development set")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of the pipeline against plain Keras "
        "and raw decoding; writes the JSON results and the table in docs/benchmarks.md.")
    parser.add_argument("--data-dir", help=f"default: {SHARED_DATA_DIR}, else data/sample")
    parser.add_argument("--model", choices=architectures.MODEL_NAMES, default=e2e.Settings.model)
    parser.add_argument("--epochs", type=int, default=e2e.Settings.epochs)
    parser.add_argument("--image-size", type=int, default=e2e.Settings.image_size)
    parser.add_argument("--batch-size", type=int, default=e2e.Settings.batch_size)
    parser.add_argument("--split", default="70,15,15", help="train,eval,test percentages")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every measurement")
    parser.add_argument("--serving-requests", type=int, default=30,
                        help="timed requests per backend, batch size and repeat")
    parser.add_argument("--work-dir", help="pipeline outputs and exports (default: a "
                                           "temporary folder, removed afterwards)")
    parser.add_argument("--results", default=RESULTS_FILE, help="JSON results file")
    parser.add_argument("--doc", default=DOC_FILE, help="Markdown file whose table is rewritten")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1 or args.serving_requests < 1:
        parser.error("--repeats, --epochs and --serving-requests must be at least 1")
    return args


def run_all(args: argparse.Namespace, work_dir: str) -> dict:
    from imaging import ingest
    from pipeline.config import PipelineConfig
    from pipeline.summary import summarize
    from serving import export

    data_dir, note = (args.data_dir, "") if args.data_dir else default_data_dir()
    if note:
        print(f"bench: {note}", flush=True)
    records = ingest.scan(data_dir).records
    settings = e2e.Settings(data_dir=os.path.abspath(data_dir), model=args.model,
                            epochs=args.epochs, image_size=args.image_size,
                            batch_size=args.batch_size, split=args.split)
    split = tuple(int(v) for v in settings.split.split(","))
    PipelineConfig(data_dir=settings.data_dir, model=settings.model, epochs=settings.epochs,
                   image_size=settings.image_size, batch_size=settings.batch_size,
                   split_percentages=split)
    results = {"settings": {**vars(settings), "goal_job": settings.is_goal_job,
                            "goal_job_settings": e2e.GOAL_JOB,
                            "repeats": args.repeats,
                            "serving_requests": args.serving_requests, "data_note": note},
               "machine": measure.machine()}

    runs = e2e.run(settings, work_dir, args.repeats)
    results["end_to_end"] = report.end_to_end_summary(runs)
    config = PipelineConfig(data_dir=settings.data_dir, output_dir=runs["output_dir"])
    uris = e2e.output_uris(config.metadata_path)

    print("[ingestion] raw decode loops and the Transform graph ...", flush=True)
    raw = throughput.raw_decode_rates([r.path for r in records], args.image_size, args.repeats)
    transform = throughput.transform_rate(uris["Examples"], uris["TransformGraph"],
                                          args.batch_size, args.repeats)
    print("[ingestion] ImageExampleGen fixed cost and per-image rate ...", flush=True)
    example_gen = throughput.example_gen_rates(records, split, config.beam_args, args.repeats)
    example_gen_seconds = results["end_to_end"]["components"]["ImageExampleGen"]["seconds"]
    results["ingestion"] = report.ingestion_summary(len(records), example_gen_seconds["median"],
                                                    raw, transform, example_gen)

    print("[training input] input_fn vs in-memory tensors ...", flush=True)
    results["training_input"] = throughput.training_input_rates(
        uris["Examples"], uris["TransformGraph"], args.model, args.image_size,
        args.batch_size, args.repeats)

    print("[serving] in process, gRPC, ONNX Runtime, TFLite ...", flush=True)
    run_summary = summarize(config)
    results["end_to_end"]["last_run_blessed_and_pushed"] = run_summary.pushed_model_dir is not None
    results["serving"] = serving_bench.run(
        serving_bench.version_folder(uris["Model"], os.path.join(work_dir, "serving")),
        export.split_images(uris["Examples"], "test"),
        os.path.join(work_dir, "exports"), args.serving_requests, args.repeats)

    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["goals"] = report.goals(results)
    return results


def _quiet_libraries() -> None:
    """Deprecation notices from TFX, TF and Beam would bury the progress lines."""
    import logging
    import warnings

    from absl import logging as absl_logging

    warnings.simplefilter("ignore")
    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in ("tensorflow", "apache_beam", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _quiet_libraries()
    from imaging.ingest import DataError

    try:
        if args.work_dir:
            os.makedirs(args.work_dir, exist_ok=True)
            results = run_all(args, os.path.abspath(args.work_dir))
        else:
            with tempfile.TemporaryDirectory(prefix="cxr-bench-") as work_dir:
                results = run_all(args, work_dir)
    except (DataError, ValueError, e2e.BenchError) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, e2e.BenchError) else 1
    report.write_json(results, args.results)
    report.write_markdown(results, args.doc)
    report.print_goals(results["goals"])
    print(f"Wrote {args.results} and {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
