import os

import pytest

from conftest import make_subset
from cxr import cli


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


def test_unknown_label_stops_the_pipeline_before_training(tmp_path, capsys):
    data_dir = make_subset(str(tmp_path / "data"), per_class=4,
                           relabel={"images/normal_actualmed_0008.jpg": "Lung_Opacity"})
    out = tmp_path / "out"
    code = cli.main(["run", "--data-dir", data_dir, "--output-dir", str(out),
                     "--image-size", "64", "--epochs", "1"])
    assert code == 1
    line = _error_line(capsys)
    assert "DataAnomaliesError" in line and "/label:" in line and "Lung_Opacity" in line
    assert not os.path.exists(out / "pipelines" / "cxr" / "Transform")
    assert not os.path.exists(out / "pipelines" / "cxr" / "Trainer")
