import glob
import json
import os
import shutil

import pytest

from conftest import make_subset
from cxr import cli
from imaging.conftest import make_messy_data
from serving import allocator


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_data_dir_is_one_line_usage_error(tmp_path, capsys):
    assert cli.main(["run", "--data-dir", str(tmp_path / "nope")]) == 2
    assert _error_line(capsys) == f"cxr: error: data directory not found: {tmp_path / 'nope'}"


def test_folder_without_images_is_one_line_usage_error(tmp_path, capsys):
    (tmp_path / "Normal").mkdir()
    assert cli.main(["run", "--data-dir", str(tmp_path)]) == 2
    assert "no images found" in _error_line(capsys)


@pytest.mark.parametrize("flag,value,message", [
    ("--epochs", "0", "epochs must be at least 1"),
    ("--image-size", "8", "image size must be between"),
    ("--min-covid-recall", "1.5", "min_covid_recall must be between 0 and 1"),
    ("--dropout", "1.5", "dropout must be in [0, 1), got 1.5"),
])
def test_bad_flag_values_are_one_line_usage_errors(tmp_path, capsys, flag, value, message):
    data_dir = make_subset(str(tmp_path / "data"), per_class=1)
    assert cli.main(["run", "--data-dir", data_dir, flag, value]) == 2
    assert message in _error_line(capsys)


def test_bad_split_is_a_one_line_usage_error(tmp_path, capsys):
    assert cli.main(["run", "--data-dir", str(tmp_path), "--split", "80,20"]) == 2
    assert "split percentages need 3 positive integers" in _error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--data-dir", str(tmp_path), "--split", "80,x,10"])
    assert exit_info.value.code == 2
    assert "expected integers like 70,15,15" in capsys.readouterr().err


def test_serve_malloc_arenas_flag_is_checked_before_the_server_starts(tmp_path, capsys):
    assert cli.main(["serve", "--model-dir", str(tmp_path), "--malloc-arenas", "-1"]) == 2
    assert _error_line(capsys) == ("cxr: error: --malloc-arenas must be 0 (glibc's default) or "
                                   "a positive number of arenas, got -1")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model-dir", str(tmp_path), "--malloc-arenas", "two"])
    assert exit_info.value.code == 2
    assert "argument --malloc-arenas: invalid int value: 'two'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert (f"glibc malloc arenas of the server process (default "
            f"{allocator.DEFAULT_MALLOC_ARENAS}:") in help_text
    assert "MALLOC_ARENA_MAX in the environment wins" in help_text


def test_unknown_label_is_a_one_line_error_before_the_pipeline_starts(tmp_path, capsys):
    data_dir = make_subset(str(tmp_path / "data"), per_class=2,
                           relabel={"images/normal_actualmed_0011.jpg": "Lung_Opacity"})
    out = tmp_path / "out"
    assert cli.main(["run", "--data-dir", data_dir, "--output-dir", str(out)]) == 2
    assert _error_line(capsys).startswith(
        "cxr: error: unknown label(s) Lung_Opacity (1 files); known labels: COVID-19, "
        "Pneumonia, Normal")
    assert not out.exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--min-image-side", "0", "min_image_side must be at least 1"),
    ("--max-quarantined-fraction", "2", "max_quarantined_fraction must be between 0 and 1"),
])
def test_bad_ingestion_flags_are_one_line_usage_errors(tmp_path, capsys, flag, value, message):
    data_dir = make_subset(str(tmp_path / "data"), per_class=1)
    for command in ("run", "check-data"):
        assert cli.main([command, "--data-dir", data_dir, flag, value]) == 2
        assert message in _error_line(capsys)


def test_check_data_prints_counts_per_reason_and_writes_the_report(tmp_path, capsys):
    make_messy_data(str(tmp_path / "data"))
    report = tmp_path / "reports" / "quarantine.csv"
    code = cli.main(["check-data", "--data-dir", str(tmp_path / "data"), "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines() == [
        "Ingestion: 21 files, 14 accepted (COVID-19 5, Pneumonia 4, Normal 5), 2 of them "
        "converted, 7 quarantined",
        "      2  not an image",
        "      1  corrupt or truncated image",
        "      1  duplicate image",
        "      1  empty file",
        "      1  image too large",
        "      1  image too small",
        f"Quarantine report: {report}"]
    assert captured.err.strip() == (
        "cxr: check-data failed: QuarantineError: 7 of 21 files (33%) were quarantined, more "
        "than the allowed 10% (not an image 2, corrupt or truncated image 1, duplicate image 1, "
        "empty file 1, image too large 1, image too small 1). Every rejected file and its "
        f"reason is in {report}")
    rows = report.read_text().splitlines()
    assert len(rows) == 8 and rows[0] == "path,reason,detail"
    assert f"{tmp_path / 'data' / 'COVID' / 'zero.jpg'},empty file,0 bytes" in rows


def test_check_data_passes_within_the_limit_and_writes_json(tmp_path, capsys):
    make_messy_data(str(tmp_path / "data"))
    report = tmp_path / "q.json"
    assert cli.main(["check-data", "--data-dir", str(tmp_path / "data"), "--report", str(report),
                     "--max-quarantined-fraction", "0.5"]) == 0
    assert capsys.readouterr().err == ""
    saved = json.loads(report.read_text())
    assert saved["quarantined_per_reason"]["not an image"] == 2
    assert len(saved["quarantined"]) == 7 and len(saved["converted"]) == 2


def test_check_data_skips_unknown_labels_only_when_asked_and_apart_from_bad_files(
        tmp_path, capsys, monkeypatch):
    """A skipped file is no rejected file: not in the CSV, not counted against the default
    10% (1 of 7 files would be 14%); and no report is written unless asked."""
    data_dir = make_subset(str(tmp_path / "data"), per_class=2,
                           relabel={"images/normal_actualmed_0011.jpg": "Lung_Opacity"})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check-data", "--data-dir", data_dir]) == 2
    assert "known labels: COVID-19, Pneumonia, Normal" in _error_line(capsys)
    assert cli.main(["check-data", "--data-dir", data_dir, "--ignore-unknown-labels"]) == 0
    out = capsys.readouterr().out
    assert "0 quarantined" in out and "Quarantine report" not in out
    assert out.splitlines()[-1] == ("Skipped on request (--ignore-unknown-labels): 1 file, not "
                                    "counted as quarantined (Lung_Opacity 1)")
    assert sorted(os.listdir(tmp_path)) == ["data"]
    report = tmp_path / "q.json"
    assert cli.main(["check-data", "--data-dir", data_dir, "--report", str(report),
                     "--ignore-unknown-labels"]) == 0
    saved = json.loads(report.read_text())
    assert saved["quarantined"] == []
    assert [(os.path.basename(s["path"]), s["label"]) for s in saved["skipped"]] == [
        ("normal_actualmed_0011.jpg", "Lung_Opacity")]


def test_check_data_user_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["check-data", "--data-dir", str(tmp_path / "nope")]) == 2
    assert _error_line(capsys) == f"cxr: error: data directory not found: {tmp_path / 'nope'}"
    (tmp_path / "manifest.csv").write_text("path,label\na.png,Normal\n")
    assert cli.main(["check-data", "--data-dir", str(tmp_path)]) == 2
    assert _error_line(capsys).endswith("manifest.csv lacks required column(s): file")
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the report's folder should be")
    data_dir = make_subset(str(tmp_path / "data"), per_class=1)
    assert cli.main(["check-data", "--data-dir", data_dir,
                     "--report", str(blocker / "q.csv")]) == 2
    assert _error_line(capsys).startswith(f"cxr: error: cannot create output directory {blocker}")


def test_a_class_without_files_is_a_one_line_error_before_the_pipeline(tmp_path, capsys):
    make_messy_data(str(tmp_path / "data"))
    shutil.rmtree(tmp_path / "data" / "PNEUMONIA")
    out = tmp_path / "out"
    assert cli.main(["run", "--data-dir", str(tmp_path / "data"), "--output-dir", str(out)]) == 2
    assert _error_line(capsys) == (
        f"cxr: error: no files of class Pneumonia in {tmp_path / 'data'}; every class of "
        "COVID-19, Pneumonia, Normal needs images")
    assert not out.exists()


def test_run_with_too_many_bad_files_stops_at_ingestion(tmp_path, capsys):
    make_messy_data(str(tmp_path / "data"))
    out = tmp_path / "out"
    assert cli.main(["run", "--data-dir", str(tmp_path / "data"), "--output-dir", str(out),
                     "--image-size", "64", "--epochs", "1"]) == 1
    line = _error_line(capsys)
    assert line.startswith("cxr: run failed: QuarantineError: 7 of 21 files (33%) were "
                           "quarantined, more than the allowed 10% (not an image 2, ")
    reports = glob.glob(str(out / "pipelines" / "cxr" / "ImageExampleGen" / "quarantine" / "*" /
                            "quarantine.json"))
    assert len(reports) == 1 and line.endswith(f"reason is in {reports[0]}")
    assert not (out / "pipelines" / "cxr" / "StatisticsGen").exists()
    assert not (out / "pipelines" / "cxr" / "Trainer").exists()


def test_installed_command_reports_a_user_error_in_exactly_one_line(tmp_path):
    """Through the console script, as a user runs it: library import warnings included."""
    import subprocess
    import sys

    cxr_script = os.path.join(os.path.dirname(sys.executable), "cxr")
    user_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([cxr_script, "run", "--data-dir", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=300, env=user_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"cxr: error: data directory not found: {tmp_path / 'missing'}"]
