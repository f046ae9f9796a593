"""The example notebook runs top to bottom, so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_quickstart_notebook_runs_and_predicts(tmp_path):
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = {index: cell.get("outputs", []) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    assert not [output for cells in outputs.values() for output in cells if output.output_type == "error"]
    shown = [output["data"] for cells in outputs.values() for output in cells if "data" in output]
    assert any("text/html" in data and "imgclf-run" in data["text/html"] for data in shown)  # the run's card
    assert any("image/png" in data for data in shown)  # the Grad-CAM overlay
    assert (tmp_path / "runs" / "quickstart" / "model.onnx").is_file()
    last = shown[-1]["text/plain"]
    assert last == "('model.onnx', True)"
