"""The API reference (docs/, Sphinx) builds without a warning and documents every public name.

The build runs autodoc (it imports eosdyn, eosdyn.bridge and so torch) but executes no
notebook and no figure: the notebooks are included as source. Skipped when Sphinx is not
installed (it is in the ``dev`` extra).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The packages whose ``__all__`` the reference must cover, one page each (docs/api/NAME.rst).
PACKAGES = ["eosdyn", "eosdyn.sim", "eosdyn.losses", "eosdyn.rules", "eosdyn.analysis", "eosdyn.flows",
            "eosdyn.sde", "eosdyn.curvature", "eosdyn.bridge", "eosdyn.sweep", "eosdyn.plot", "eosdyn.engine",
            "eosdyn.codegen", "eosdyn.claims"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sphinx")
    pytest.importorskip("torch")  # autodoc imports eosdyn.bridge
    out = tmp_path_factory.mktemp("docs_html")
    doctrees = tmp_path_factory.mktemp("doctrees")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-d", str(doctrees), str(DOCS), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    return proc, out


def test_docs_build_without_warnings(built):
    proc, out = built
    assert proc.returncode == 0, f"sphinx -W failed:\n{proc.stderr[-6000:]}"
    assert proc.stderr.strip() == "", proc.stderr[-6000:]
    for page in ["index", "gallery", "notebooks", "api/index"] + [f"api/{p.split('.')[-1]}" for p in PACKAGES]:
        assert (out / f"{page}.html").is_file(), page


def _inventory(out: Path) -> set:
    from sphinx.util.inventory import InventoryFile

    with open(out / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda uri, base: uri)
    names = set()
    for kind, entries in inv.items():
        if kind.startswith("py:"):
            names.update(entries)
    return names


def _documented_as(obj, package: str, name: str) -> set:
    """The names under which ``obj``, exported as ``package.name``, may be documented."""
    names = {f"{package}.{name}"}
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qual, str):
        names.add(f"{module}.{qual}")  # a re-export is documented once, at its home (":canonical:")
        for other in PACKAGES:  # ... or on the page of the package that owns it
            if module == other or module.startswith(other + "."):
                names.add(f"{other}.{qual}")
    if getattr(obj, "__name__", None) and type(obj).__name__ == "module":
        names.add(obj.__name__)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(built, package):
    proc, out = built  # --keep-going: the inventory is written even when a warning failed the build
    assert (out / "objects.inv").is_file(), proc.stderr[-6000:]
    inventory = _inventory(out)
    mod = importlib.import_module(package)
    missing = [name for name in mod.__all__
               if not _documented_as(getattr(mod, name), package, name) & inventory]
    assert not missing, f"{package}: public names missing from the API reference: {missing}"
