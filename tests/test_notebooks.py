"""Execute every notebook in notebooks/ (jupytext percent format) in its small configuration.

Each .py is converted to a notebook with jupytext and run by nbclient on the python3
kernel with EOSDYN_NOTEBOOK_QUICK=1; a cell that raises (the notebooks assert their own
numbers: thresholds against closed forms, variances against σ²/(2λ) and σ²/(λ(2−ηλ)), the
sharpness plateau against 2/η) fails the test. Skipped when jupytext, nbclient or a
python3 kernel is missing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart", "stability_explorer", "sde_vs_noisy_gd", "real_network_sharpness"]


def _kernel_available():
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return "python3" in KernelSpecManager().find_kernel_specs()
    except Exception:  # noqa: BLE001
        return False


def test_every_notebook_is_listed():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
    assert found == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    if name == "real_network_sharpness":
        pytest.importorskip("torch")
    if not _kernel_available():
        pytest.skip("no python3 Jupyter kernel")
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert len(nb.cells) >= 4, "a notebook has markdown and code cells"
    assert any(c.cell_type == "markdown" for c in nb.cells)
    monkeypatch.setenv("EOSDYN_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert text.strip(), "the notebook prints its numbers"
