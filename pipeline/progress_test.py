"""`cxr run`'s progress lines and summary table, on the shared tiny pipeline's outputs."""
import re

from cxr import cli
from pipeline import progress
from pipeline.pipeline_e2e_test import ALL_NODES


def test_key_figures_come_from_each_components_outputs(tiny_pipeline):
    config = tiny_pipeline.config
    figures = {node: progress.key_figure(node, progress._node_state(config, node)[1])
               for node in ALL_NODES}
    assert figures["ImageExampleGen"] == "24 examples written, 0 files quarantined"
    assert figures["ExampleValidator"] == "no anomalies"
    assert re.fullmatch(r"eval loss \d+\.\d{3} \(epoch [12] of 2 kept\)", figures["Trainer"])
    assert re.fullmatch(r"blessed, test accuracy \d\.\d{3}", figures["Evaluator"])
    assert re.fullmatch(r"test accuracy \d\.\d{3} \(95% CI \d\.\d{3}-\d\.\d{3}\)",
                        figures["ModelCardGenerator"])
    version = tiny_pipeline.second.pushed_model_dir.rsplit("/", 1)[1]
    assert figures["Pusher"] == f"pushed version {version}"
    assert figures["latest_blessed_model_resolver"] == "baseline: the last blessed model"


def test_run_prints_each_component_and_a_table_and_takes_flags_after_the_command(
        tiny_pipeline, capsys):
    args = ["run", *tiny_pipeline.flags, "--model", "mobilenet_v2", "--pipeline-name",
            "cxr-mobilenet_v2", "--serving-model-name", "cxr_mobilenet_v2", "--debug"]
    assert cli.main(args) == 0  # the third run: every component but the resolver is cached
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "[ 1/12] ImageExampleGen ..."
    assert re.fullmatch(r"\[ 1/12\] ImageExampleGen reused from cache in \d+\.\d s: "
                        r"24 examples written, 0 files quarantined", lines[2])
    header = lines.index(next(line for line in lines if line.startswith("component ")))
    table = lines[header + 1:header + 1 + len(ALL_NODES)]
    assert {row.split()[0] for row in table} == ALL_NODES
    assert {row.split()[0]: row.split()[1] for row in table if row.split()[1] != "cached"} \
        == {"latest_blessed_model_resolver": "ran"}
    assert lines[header + 1 + len(ALL_NODES)].startswith("total")


def test_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from cxr import cli\n"
            "try: cli.main(['--help'])\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "usage: cxr" in out and out.strip().endswith("[]")
