import shutil

import pytest

from components import code_digest


@pytest.fixture()
def packages(tmp_path, monkeypatch):
    """A copy of models/ as the packages root, to edit without touching the checkout."""
    shutil.copytree(f"{code_digest.PACKAGES_ROOT}/models", tmp_path / "models",
                    ignore=shutil.ignore_patterns("weights", "__pycache__"))
    monkeypatch.setattr(code_digest, "PACKAGES_ROOT", str(tmp_path))
    return tmp_path


def test_an_edit_to_the_code_changes_the_digest_and_tests_do_not(packages):
    before = code_digest.source_sha256("models")
    assert before == code_digest.source_sha256("models") and len(before) == 64
    (packages / "models" / "trainer_test.py").write_text("# tests do not change a model\n")
    assert code_digest.source_sha256("models") == before
    with open(packages / "models" / "trainer.py", "a") as f:
        f.write("\n# another learning-rate schedule\n")
    assert code_digest.source_sha256("models") != before


def test_the_digest_does_not_depend_on_where_the_checkout_is(packages, tmp_path_factory,
                                                            monkeypatch):
    here = code_digest.source_sha256("models", "models/features.py")
    elsewhere = tmp_path_factory.mktemp("other-checkout")
    shutil.copytree(packages / "models", elsewhere / "models")
    monkeypatch.setattr(code_digest, "PACKAGES_ROOT", str(elsewhere))
    assert code_digest.source_sha256("models", "models/features.py") == here


def test_a_missing_source_is_an_error_not_an_empty_digest():
    with pytest.raises(FileNotFoundError, match="no such source to fingerprint: .*modles"):
        code_digest.source_sha256("modles")


def test_ingestion_digest_sees_the_image_path_it_runs(tmp_path, monkeypatch):
    for package in ("components/image_example_gen", "imaging"):
        shutil.copytree(f"{code_digest.PACKAGES_ROOT}/{package}", tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "models").mkdir()
    shutil.copy(f"{code_digest.PACKAGES_ROOT}/models/features.py", tmp_path / "models")
    monkeypatch.setattr(code_digest, "PACKAGES_ROOT", str(tmp_path))
    before = code_digest.component_sha256("image_example_gen")
    code_digest.check_component(before, "image_example_gen")  # the executor's check agrees
    with open(tmp_path / "imaging" / "prepare.py", "a") as f:
        f.write("\n# another EXIF rule\n")
    assert code_digest.component_sha256("image_example_gen") != before
    with pytest.raises(code_digest.CodeMismatchError, match="imaging"):
        code_digest.check_component(before, "image_example_gen")
