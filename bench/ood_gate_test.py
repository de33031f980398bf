"""The gate's benchmark end to end on the tiny pipeline's pushed model and its own examples."""
import glob
import json
import os

from bench import ood_gate, ood_set


def test_every_category_is_measured_and_the_doc_section_rewritten(tiny_pipeline, tmp_path):
    examples = max(glob.glob(os.path.join(tiny_pipeline.config.pipeline_root,
                                          "ImageExampleGen", "examples", "*")),
                   key=os.path.getmtime)
    doc = tmp_path / "gate.md"
    doc.write_text("# Gate\n\nhand-written\n")
    results_file = tmp_path / "gate.json"
    assert ood_gate.main(["--model-dir", tiny_pipeline.first.pushed_model_dir,
                          "--examples", examples, "--results", str(results_file),
                          "--doc", str(doc)]) == 0
    rows = json.loads(results_file.read_text())["report"]["rows"]
    assert set(rows) == {ood_gate.HELD_OUT, "text", "flat", "noise", "phantom", "photograph",
                         "medical, not chest", "rotated film", "inverted film"}
    assert rows["photograph"]["images"] >= 8 and rows["medical, not chest"]["images"] >= 8
    assert rows["rotated film"]["images"] == 3 * rows["inverted film"]["images"] >= 3
    assert all(0 <= row["flagged"] <= row["images"] for row in rows.values())
    held_out = rows[ood_gate.HELD_OUT]
    low, high = held_out["ci95"]
    assert 0 <= low <= held_out["flagged"] / held_out["images"] <= high <= 1
    assert 1 <= held_out["patients"] <= held_out["images"]
    text = doc.read_text()
    assert "95% interval" in text and "clustered by patient" in text
    assert text.startswith("# Gate\n\nhand-written\n") and ood_gate.BEGIN in text
    assert "| **all non-chest-X-ray inputs** |" in text


def test_the_offline_set_is_the_same_on_every_call():
    first = [(s.category, s.name, len(s.data)) for s in ood_set.generated(0)]
    assert first == [(s.category, s.name, len(s.data)) for s in ood_set.generated(0)]
    assert {s.category for s in ood_set.generated(0)} == {"text", "flat", "noise", "phantom"}
