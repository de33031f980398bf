import ast
import os
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
    before = code_digest.module_sha256("models.trainer")
    assert before == code_digest.module_sha256("models.trainer") and len(before) == 64
    (packages / "models" / "trainer_test.py").write_text("# tests do not change a model\n")
    assert code_digest.module_sha256("models.trainer") == before
    with open(packages / "models" / "trainer.py", "a") as f:
        f.write("\n# another learning-rate schedule\n")
    assert code_digest.module_sha256("models.trainer") != before


def test_the_digest_does_not_depend_on_where_the_checkout_is(packages, tmp_path_factory,
                                                            monkeypatch):
    here = code_digest.module_sha256("models.trainer")
    elsewhere = tmp_path_factory.mktemp("other-checkout")
    shutil.copytree(packages / "models", elsewhere / "models")
    monkeypatch.setattr(code_digest, "PACKAGES_ROOT", str(elsewhere))
    assert code_digest.module_sha256("models.trainer") == here


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A copy of the project's packages as the packages root (tests and weights aside)."""
    for package in code_digest.PROJECT_PACKAGES:
        shutil.copytree(f"{code_digest.PACKAGES_ROOT}/{package}", tmp_path / package,
                        ignore=shutil.ignore_patterns("weights", "__pycache__", "*_test.py"))
    monkeypatch.setattr(code_digest, "PACKAGES_ROOT", str(tmp_path))
    return tmp_path


def test_ingestion_digest_sees_the_image_path_it_runs(project):
    before = code_digest.component_sha256("image_example_gen")
    code_digest.check_component(before, "image_example_gen")  # the executor's check agrees
    with open(project / "imaging" / "prepare.py", "a") as f:
        f.write("\n# another EXIF rule\n")
    assert code_digest.component_sha256("image_example_gen") != before
    with pytest.raises(code_digest.CodeMismatchError, match="imaging"):
        code_digest.check_component(before, "image_example_gen")


def test_a_component_digest_covers_what_its_code_imports_and_nothing_else(project):
    sources = code_digest.imported_sources(*code_digest.component_modules("model_card"))
    # Imported at module level, by a relative chain, and lazily inside functions.
    assert {"components/model_card/executor.py", "evaluation/render.py",
            "evaluation/metrics.py", "models/features.py"} <= set(sources)
    assert "components/grad_cam/executor.py" not in sources
    assert not any(source.endswith("_test.py") for source in sources)
    before = {package: code_digest.component_sha256(package)
              for package in ("model_card", "image_example_gen")}
    with open(project / "evaluation" / "metrics.py", "a") as f:
        f.write("\n# another interval\n")
    assert code_digest.component_sha256("model_card") != before["model_card"]
    assert code_digest.component_sha256("image_example_gen") == before["image_example_gen"]


def test_a_lazy_import_inside_a_function_is_followed(project):
    (project / "models" / "lazy.py").write_text(
        "def run():\n    from evaluation import bias\n    return bias\n")
    assert "evaluation/bias.py" in code_digest.imported_sources("models.lazy")


def test_transform_does_not_rerun_for_a_trainer_edit(project):
    """Transform's digest covers preprocessing_fn's code only."""
    preprocessing = code_digest.module_sha256("models.preprocessing")
    trainer = code_digest.module_sha256("models.trainer")
    with open(project / "models" / "trainer.py", "a") as f:
        f.write("\n# another schedule\n")
    assert code_digest.module_sha256("models.preprocessing") == preprocessing
    assert code_digest.module_sha256("models.trainer") != trainer


def test_a_missing_module_is_an_error_not_an_empty_digest():
    with pytest.raises(FileNotFoundError, match="no such module to fingerprint: models.trainr"):
        code_digest.module_sha256("models.trainr")


def test_the_project_packages_are_the_ones_setup_py_installs():
    tree = ast.parse(open(os.path.join(code_digest.PACKAGES_ROOT, "setup.py")).read())
    [call] = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
              and getattr(node.func, "id", None) == "find_packages"]
    [include] = [keyword.value for keyword in call.keywords if keyword.arg == "include"]
    installed = {element.value for element in include.elts if "." not in element.value}
    assert set(code_digest.PROJECT_PACKAGES) == installed
