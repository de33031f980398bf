"""`cxr app` refuses unusable flags with one line before starting any server."""
import pytest

from cxr import cli


@pytest.mark.parametrize("argv, message", [
    (["app"], "cxr: error: give --model-dir SERVING_DIR, --server HOST:PORT, or both"),
    (["app", "--server", "localhost:8500"],
     "cxr: error: --server needs --model-name, the name the model is served under"),
])
def test_app_flag_errors_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_app_names_a_missing_model_dir_and_a_bad_port(tmp_path, capsys):
    assert cli.main(["app", "--model-dir", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"cxr: error: model directory not found: {tmp_path / 'nope'}")
    version = tmp_path / "cxr_classifier" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    assert cli.main(["app", "--model-dir", str(tmp_path), "--port", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "cxr: error: --port must be between 1 and 65535, got 0")
