"""Each component folder holds its component, its executor and their tests only; shared
library code lives in its own package (imaging/, explain/, evaluation/, serving/)."""
import os

COMPONENTS_DIR = os.path.dirname(os.path.abspath(__file__))
ALLOWED = {"__init__.py", "component.py", "executor.py", "conftest.py"}


def test_component_folders_hold_a_component_an_executor_and_tests_only():
    folders = sorted(name for name in os.listdir(COMPONENTS_DIR)
                     if os.path.isfile(os.path.join(COMPONENTS_DIR, name, "component.py")))
    assert len(folders) >= 6, folders
    for folder in folders:
        modules = {name for name in os.listdir(os.path.join(COMPONENTS_DIR, folder))
                   if name.endswith(".py")}
        assert {"component.py", "executor.py"} <= modules, folder
        extra = {name for name in modules - ALLOWED if not name.endswith("_test.py")}
        assert not extra, f"components/{folder} holds library code: {sorted(extra)}"
