"""Both notebooks run top to bottom (on the shipped checkpoints), as a user would run them."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str) -> str:
    """Execute ``notebooks/<name>`` in a fresh kernel; return everything its cells printed."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_quickstart_notebook_runs():
    outputs = run_notebook("quickstart.ipynb")
    assert "answer:" in outputs and "longshort-prompt" in outputs and "longshort-rl" in outputs


def test_embedding_notebook_runs():
    outputs = run_notebook("embed_in_langgraph_app.ipynb")
    assert "AI: The answer is" in outputs and "[long]" in outputs and "[short]" in outputs
