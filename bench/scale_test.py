"""The scale benchmark on tiny data: the data sets it builds and one real run end to end.

No timing assertions (a 30-image run measures start-up); what matters is that
`make bench-scale` builds distinct images and writes complete results, plot and table.
"""
import csv
import hashlib
import json
import os

import pytest

from bench import partial_run, scale, scale_data
from conftest import SAMPLE_DIR
from models import features


def test_sizes_accept_thousands_and_refuse_tiny_sets():
    assert scale_data.sizes_from_text("20k,2k,10000,2k") == [2000, 10000, 20000]
    with pytest.raises(ValueError, match="at least 30"):
        scale_data.sizes_from_text("10")


def test_built_set_has_distinct_images_with_their_sources_metadata(tmp_path):
    out = str(tmp_path / "set")
    description = scale_data.build(SAMPLE_DIR, 150, out, progress=False)

    with open(os.path.join(out, "manifest.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(SAMPLE_DIR, "manifest.csv"), newline="") as f:
        source_rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    assert len(rows) == 150 == description["images"]
    digests = {hashlib.sha256(open(os.path.join(out, r["file"]), "rb").read()).hexdigest()
               for r in rows}
    assert len(digests) == 150  # variants, not copies: ingestion would drop copies
    # Image 120 is the second variant of the same source image as image 0.
    assert (rows[120]["label"], rows[120]["patient_id"]) == (rows[0]["label"],
                                                            rows[0]["patient_id"])
    assert {r["label"] for r in rows} == set(features.CLASS_NAMES)
    assert sum(description["per_class"].values()) == 150 and len(source_rows) == 120
    mtime = os.path.getmtime(os.path.join(out, rows[0]["file"]))
    assert scale_data.build(SAMPLE_DIR, 150, out, progress=False) == description  # reused
    assert os.path.getmtime(os.path.join(out, rows[0]["file"])) == mtime


def test_goals_compare_per_image_time_and_memory_of_largest_and_smallest_set():
    def entry(images, seconds, peak, workers=1):
        component = {"seconds": {"median": seconds}, "ms_per_image": {
            "median": 1000 * seconds / images}, "peak_rss_mib": {"median": peak}}
        return {"images": images, "beam_direct_workers": workers,
                "components": {"ImageExampleGen": component}}

    goals = scale.goals([entry(2000, 10.0, 1000.0), entry(20000, 130.0, 1200.0),
                         entry(20000, 60.0, 1500.0, workers=2)])
    assert [(g["value"], g["met"]) for g in goals] == [
        (pytest.approx(1.3), False), (pytest.approx(1.2), True)]
    merged = scale.merge([entry(2000, 10.0, 1000.0)], [entry(2000, 9.0, 900.0)])
    assert len(merged) == 1 and merged[0]["components"]["ImageExampleGen"]["seconds"][
        "median"] == 9.0


def test_scale_run_writes_results_plot_and_table(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nhand-written notes\n")
    results = tmp_path / "scale.json"
    assert scale.main([
        "--sizes", "36", "--source", SAMPLE_DIR, "--work-dir", str(tmp_path / "work"),
        "--image-size", "32", "--epochs", "1", "--train-steps", "1", "--batch-size", "8",
        "--results", str(results), "--doc", str(doc), "--plot", str(tmp_path / "scale.png"),
    ]) == 0

    entry = json.loads(results.read_text())["entries"][0]
    assert (entry["images"], entry["examples"], entry["beam_direct_workers"]) == (36, 36, 1)
    for name in scale.DATA_COMPONENTS:
        component = entry["components"][name]
        assert component["seconds"]["median"] > 0
        assert component["ms_per_image"]["median"] == pytest.approx(
            1000 * component["seconds"]["median"] / 36)
        assert component["peak_rss_mib"]["median"] > 100
    assert len(entry["runs"][0]["load_average_at_start"]) == 3
    assert not os.path.exists(tmp_path / "work" / "data-36")  # deleted after use
    assert (tmp_path / "scale.png").stat().st_size > 10_000
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written notes\n")
    assert scale.BEGIN in text and "| ImageExampleGen |" in text and "(scale.png)" in text


def test_runs_through_a_node_stand_beside_whole_runs_and_give_the_newer_goals():
    def entry(images, peak, through=None, started="2026-01-01 00:00:00"):
        names = ("ImageExampleGen",) if through else ("ImageExampleGen", "Evaluator")
        component = {"seconds": {"median": 1.0}, "ms_per_image": {"median": 1000 / images},
                     "peak_rss_mib": {"median": peak}}
        return {"images": images, "beam_direct_workers": 1, "settings": {"through": through},
                "machine": {"started_utc": started}, "components": {n: component for n in names}}

    whole = [entry(2000, 1000.0), entry(50000, 1400.0)]
    partial = [entry(2000, 1000.0, "StatisticsGen", "2026-02-01 00:00:00"),
               entry(50000, 1200.0, "StatisticsGen", "2026-02-01 01:00:00")]
    merged = scale.merge(whole, partial)
    assert len(merged) == 4  # a run through a node does not replace a whole run
    memory = {g["goal"]: g["value"] for g in scale.goals(merged) if "RSS" in g["goal"]}
    assert memory == {
        "ImageExampleGen: peak RSS at 50000 / at 2000 (runs through StatisticsGen)":
            pytest.approx(1.2),
        "Evaluator: peak RSS at 50000 / at 2000": pytest.approx(1.4)}


def test_partial_run_refuses_a_node_the_pipeline_lacks(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        partial_run.main(["--through", "Nope", "--data-dir", SAMPLE_DIR,
                          "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--through: no node 'Nope'; the pipeline's nodes: ImageExampleGen, " in error
    assert ", StatisticsGen, " in error and error.rstrip().endswith(", Pusher")
