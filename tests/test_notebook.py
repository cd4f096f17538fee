"""The worked notebook runs top to bottom on a real DuckDB file and shows real numbers."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from analysis.data.synthetic import make_synthetic_db

NB = Path(__file__).resolve().parents[1] / "notebooks" / "seam_demo.ipynb"


def test_seam_demo_notebook_executes(tmp_path, monkeypatch):
    db = tmp_path / "seam.duckdb"
    make_synthetic_db(db, 300, k=3, seed=1)
    monkeypatch.setenv("SEAM_DB", str(db))
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "mean_seam" in text and "accuracy" in text
