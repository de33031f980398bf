import subprocess
import sys
from importlib import metadata

from cxr import requirements


def test_dicom_extra_lists_the_readers_the_tfx_image_lacks():
    names = [r.split("<")[0].split(">")[0] for r in requirements.extra_requirements("dicom")]
    assert names == ["pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
                     "pylibjpeg-rle"]


def test_unknown_extra_is_one_line_and_non_zero():
    result = subprocess.run([sys.executable, "-m", "cxr.requirements", "dicomm"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "cxr-tfx has no extra named 'dicomm'"


def test_an_installed_extra_is_not_missing():
    # `make install` installs every extra the tests use.
    for extra in ("app", "export", "vertex"):
        assert requirements.missing_extra(extra) is None


def test_a_missing_extra_names_what_is_missing_and_the_install_command(monkeypatch):
    monkeypatch.setattr(requirements, "extra_requirements",
                        lambda extra: ["onnx<1.0", "no-such-package-cxr>=1", "tf2onnx>=1.17",
                                       "no-such-package-cxr2"])
    assert requirements.missing_extra("export") == (
        "needs the optional part 'export' (no-such-package-cxr, no-such-package-cxr2 not "
        f"installed; onnx is {metadata.version('onnx')}, needs <1.0): "
        "pip install -c constraints.txt -e \".[export]\"")


def test_a_command_whose_extra_is_missing_stops_with_one_line(monkeypatch, tmp_path, capsys):
    from cxr import cli

    monkeypatch.setattr(requirements, "extra_requirements", lambda extra: ["no-such-package-cxr"])
    assert cli.main(["compile", "--data-dir", str(tmp_path), "--output", str(tmp_path / "p.json"),
                     "--image", "cxr:latest"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cxr: error: cxr compile needs the optional part 'vertex' (no-such-package-cxr not "
        "installed): pip install -c constraints.txt -e \".[vertex]\""]
    assert not (tmp_path / "p.json").exists()


def test_the_installed_cxr_script_can_resolve_its_requirements():
    # The installed `cxr` sets __requires__ = 'cxr-tfx'; TFX imports setuptools in every run,
    # and pkg_resources then resolves the whole requirement tree or stops the run.
    result = subprocess.run(
        [sys.executable, "-c", "__requires__ = 'cxr-tfx'\nimport pkg_resources"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr.strip()[-300:]
