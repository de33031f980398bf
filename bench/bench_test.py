"""The benchmark machinery on tiny data: every section runs and lands in the JSON and table.

No timing assertions: the numbers of a 12-image run mean nothing; what matters is that
`make bench` produces complete, well-formed results.
"""
import json

import pytest

from bench import __main__ as bench_main
from bench import e2e, measure, plain_keras, report, throughput
from conftest import make_subset
from imaging import ingest
from models import trainer

PIPELINE_COMPONENTS = {"ImageExampleGen", "StatisticsGen", "Transform", "Trainer",
                       "Evaluator", "Pusher"}


def test_percentile_interpolates_between_ranks():
    assert measure.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert measure.percentile([1.0, 2.0, 3.0], 100) == 3.0
    assert measure.percentile([7.0], 99) == 7.0


def test_plain_keras_splits_by_patient_as_ingestion_does(tmp_path):
    records = ingest.scan(make_subset(str(tmp_path / "data"), per_class=10)).records
    parts = plain_keras.split_records(records, (70, 15, 15))
    assignment = ingest.assign_splits([(r.patient_id, r.label) for r in records],
                                      [0.7, 0.15, 0.15])
    assert sorted(r.path for part in parts.values() for r in part) == sorted(
        r.path for r in records)
    for split, part in parts.items():
        assert part and all(assignment[r.patient_id] == split for r in part)
    patients = {split: {r.patient_id for r in part} for split, part in parts.items()}
    assert not patients["train"] & (patients["eval"] | patients["test"])


def test_ratio_goal_is_assessed_at_its_epochs_of_the_default_model_only():
    assert e2e.Settings(data_dir="d").is_goal_job
    assert e2e.Settings(data_dir="d").epochs == e2e.GOAL_EPOCHS == 10
    assert e2e.GOAL_JOB["model"] == trainer.DEFAULTS["model"]
    # More epochs would dilute the fixed costs around training: not the goal's job.
    for change in ({"epochs": e2e.GOAL_EPOCHS + 6}, {"epochs": e2e.GOAL_EPOCHS - 1},
                   {"model": "baseline_cnn"}, {"image_size": 128}, {"batch_size": 32}):
        assert not e2e.Settings(data_dir="d", **change).is_goal_job, change


def _ratio_results(ratio: float, plain_accuracy: float, goal_job: bool,
                   repeats: int = report.MIN_RATIO_PAIRS) -> dict:
    statistic = {"median": ratio, "min": ratio, "max": ratio}
    return {"settings": {"goal_job": goal_job, "goal_job_settings": e2e.GOAL_JOB,
                         "repeats": repeats},
            "end_to_end": {"ratio": statistic, "plain_keras_competent": report.end_to_end_summary(
                {"pipeline_runs": [{"wall_seconds": ratio, "peak_rss_mib": 1.0, "components": {},
                                    "test_accuracy": 0.9, "test_accuracy_ci95": [0.84, 0.95]}],
                 "plain_runs": [{"wall_seconds": 1.0, "peak_rss_mib": 1.0, "images": {},
                                 "test_accuracy": plain_accuracy}]})["plain_keras_competent"]},
            "ingestion": {"example_gen_ratio": 0.6, "transform_ratio": 0.6},
            "training_input": {"ratio_fed_to_in_memory": {"median": 1.0}},
            "serving": {"grpc_overhead_p50_ms_batch1": 0.1}}


def test_ratio_goal_met_only_for_the_goal_job_against_a_competent_script():
    assert report.goals(_ratio_results(1.25, 0.86, goal_job=True))[0]["met"] is True
    assert report.goals(_ratio_results(1.35, 0.86, goal_job=True))[0]["met"] is False
    assert report.goals(_ratio_results(1.25, 0.80, goal_job=True))[0]["met"] is False
    assert report.goals(_ratio_results(1.25, 0.86, goal_job=False))[0]["met"] is False
    # A single pair is not enough on a shared machine.
    assert report.goals(_ratio_results(1.25, 0.86, goal_job=True, repeats=1))[0]["met"] is False
    assert "10 epochs of mobilenet_v2, 224 px, batch 16" in \
        report.goals(_ratio_results(1.25, 0.86, goal_job=True))[0]["goal"]


def test_missing_data_dir_is_a_one_line_error(tmp_path, capsys):
    assert bench_main.main(["--data-dir", str(tmp_path / "nothing"),
                            "--results", str(tmp_path / "r.json"),
                            "--doc", str(tmp_path / "b.md")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bench: error: data directory not found") and error.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_bench_writes_every_section_and_keeps_hand_written_notes(tmp_path):
    data_dir = make_subset(str(tmp_path / "data"), per_class=4)
    results_file, doc = tmp_path / "latest.json", tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nbefore\n{report.BEGIN}\nstale table\n{report.END}\nafter\n")
    assert bench_main.main([
        "--data-dir", data_dir, "--model", "baseline_cnn", "--repeats", "1",
        "--image-size", "32", "--epochs", "1",
        "--serving-requests", "2", "--work-dir", str(tmp_path / "work"),
        "--results", str(results_file), "--doc", str(doc)]) == 0

    results = json.loads(results_file.read_text())
    assert results["settings"]["data_dir"] == data_dir and results["settings"]["repeats"] == 1
    machine = results["machine"]
    assert machine["logical_cores"] >= 1 and machine["memory_gib"] > 0
    assert machine["versions"]["tfx"].startswith("1.16") and len(machine["load_average_at_end"]) == 3
    e2e = results["end_to_end"]
    assert PIPELINE_COMPONENTS <= set(e2e["components"])
    assert sum(c["seconds"]["median"] for c in e2e["components"].values()) \
        < e2e["pipeline_seconds"]["median"]
    assert e2e["ratio"]["median"] == pytest.approx(
        e2e["pipeline_seconds"]["median"] / e2e["plain_keras_seconds"]["median"])
    assert e2e["components"]["Trainer"]["peak_rss_mib"]["median"] > 100
    assert sum(e2e["plain_keras_images"].values()) == 12
    assert 0 <= e2e["plain_keras_test_accuracy"][0] <= 1
    low, high = e2e["pipeline_test_accuracy_ci95"][0]
    assert low <= e2e["pipeline_test_accuracy"][0] <= high
    assert e2e["plain_keras_competent"] == (e2e["plain_keras_test_accuracy"][0] >= low)
    assert results["settings"]["goal_job"] is False
    assert results["goals"][0]["met"] is False  # not the goal's job: never reported as met
    assert e2e["overhead_seconds"]["median"] == pytest.approx(
        e2e["pipeline_seconds"]["median"] - e2e["plain_keras_seconds"]["median"])
    assert results["ingestion"]["images"] == 12
    example_gen = results["ingestion"]["example_gen"]
    assert example_gen["small_run_images"] == 3 * throughput.EXAMPLE_GEN_SMALL_PER_CLASS
    assert example_gen["fixed_seconds"]["median"] > 0
    assert len(example_gen["full_run_seconds"]["values"]) == 1
    assert set(results["ingestion"]["raw_decode_images_per_second"]) == {"pil", "tf_image"}
    assert results["training_input"]["training_fed_by_input_fn"]["median"] > 0
    serving = results["serving"]
    assert set(serving["backends"]) == {"savedmodel_in_process", "grpc_cxr_serve",
                                        "onnxruntime", "tflite_float32"}
    for backend in serving["backends"].values():
        assert [b["batch_size"] for b in backend["batches"]] == [1, 8, 32]
        assert all(0 < b["p50_ms"] <= b["p99_ms"] for b in backend["batches"])
    assert [g["goal"] for g in results["goals"]] == [g["goal"] for g in report.goals(results)]
    assert all(isinstance(g["met"], bool) for g in results["goals"])

    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n") and text.endswith("after\n")
    assert "stale table" not in text
    for expected in ("| Trainer |", "| grpc_cxr_serve | encoded bytes | 32 |",
                     "| overhead: pipeline − plain (s) |", "ImageExampleGen's fixed cost",
                     "Plain Keras within the pipeline's interval",
                     "| training fed by input_fn |", machine["cpu_model"]):
        assert expected in text
