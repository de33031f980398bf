"""The notebooks run end to end on the tiny pipeline's outputs and are stored clean."""
import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(NOTEBOOK_DIR)
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))


def test_there_are_three_notebooks():
    assert [os.path.basename(p)[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_stored_notebook_has_no_outputs(path):
    """Outputs would carry images and one machine's results into git."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_on_the_tiny_pipeline(path, tiny_pipeline, monkeypatch):
    # The kernel inherits this process's environment: point it at the fixture's run.
    monkeypatch.setenv("CXR_NOTEBOOK_OUTPUT_DIR", tiny_pipeline.config.output_dir)
    monkeypatch.setenv("CXR_NOTEBOOK_PIPELINE", tiny_pipeline.config.pipeline_name)
    monkeypatch.setenv("CXR_NOTEBOOK_DATA_DIR", tiny_pipeline.data_dir)
    monkeypatch.setenv("PYTHONPATH", REPO_ROOT)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOK_DIR}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.output_type == "error"]
    assert not errors
