"""The registry of reproduced figures: name -> script in ``figures/`` and a one-line description.

``eosdyn figure NAME`` and ``eosdyn figure --list`` read it. Each script in ``figures/``
defines ``main(argv) -> dict`` (the JSON it wrote) and takes ``--quick``, ``--out DIR`` and
``--quiet``; it also runs on its own (``python figures/fig7_phase_plane.py --quick``).

The scripts live in the source tree, not in the installed package: they are found in
``$EOSDYN_FIGURES_DIR`` if set, else in the ``figures/`` directory next to the ``eosdyn``
package (a source checkout or an editable install).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FigureInfo:
    number: int
    name: str
    script: str
    description: str
    needs: tuple = ()


FIGURES = (
    FigureInfo(1, "sharpness-net", "fig1_sharpness_network.py",
               "GD's sharpness on a real network rises to 2/η and hovers there, 3 step sizes (Cohen et al. 2021)",
               ("torch", "eosdyn.bridge")),
    FigureInfo(2, "ngd-sqrt", "fig2_ngd_sqrt.py",
               "Normalized GD and GD on √(L−L*) enter the EoS, then drift along the minima to lower sharpness "
               "(Arora, Li & Panigrahi 2022)"),
    FigureInfo(3, "linear-nets", "fig3_linear_networks.py",
               "Linear networks: fraction of initialisations converging and sharpness of the limits vs η, "
               "critical step sizes marked (Crăciun & Ghoshdastidar 2024)"),
    FigureInfo(4, "eosada", "fig4_eosada.py",
               "EoS-Ada vs GD, heavy-ball and Adam: loss and sharpness over 5 seeds, toy loss and real net; "
               "claimed 2-3x speed-up vs measured", ("torch", "eosdyn.bridge")),
    FigureInfo(5, "dcao", "fig5_dcao.py",
               "DCAO vs SGD+momentum and AdamW: claimed 10-20% fewer epochs and <7% overhead vs measured",
               ("torch", "eosdyn.bridge")),
    FigureInfo(6, "bifurcation", "fig6_bifurcation.py",
               "Orbit diagram of GD vs η on the logistic-conjugate cubic, period doublings, Lyapunov exponent"),
    FigureInfo(7, "phase-plane", "fig7_phase_plane.py",
               "Phase plane of a 2-D double well: displacement field, GD orbits below/at/above 2/λ, basins"),
    FigureInfo(8, "stationary-variance", "fig8_stationary_variance.py",
               "Stationary variance: SDE σ²/(2λ) vs noisy GD σ²/(λ(2−ηλ)) as ηλ grows to 2"),
)


def figures_dir() -> Path:
    """Where the figure scripts are ($EOSDYN_FIGURES_DIR, else ``<repo>/figures``)."""
    env = os.environ.get("EOSDYN_FIGURES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "figures"


def figure_names() -> list[str]:
    return [f.name for f in FIGURES]


def find_figure(name) -> FigureInfo:
    """A figure by name (``phase-plane``), number (``7``) or script stem (``fig7_phase_plane``)."""
    key = str(name).strip().lower().replace("_", "-")
    for f in FIGURES:
        if key in (f.name, str(f.number), f"fig{f.number}", Path(f.script).stem.replace("_", "-")):
            return f
    valid = ", ".join(f"{f.name} ({f.number})" for f in FIGURES)
    raise ValueError(f"unknown figure {name!r}; valid names: {valid}")


def load_figure_module(name):
    """Import a figure script as a module (it must define ``main(argv) -> dict``)."""
    info = find_figure(name)
    path = figures_dir() / info.script
    if not path.is_file():
        raise FileNotFoundError(
            f"figure script {path} not found: figures live in the source tree (run from a checkout, "
            f"or set EOSDYN_FIGURES_DIR)")
    modname = f"eosdyn_figure_{info.number}"
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


def run_figure(name, *, quick: bool = False, out="eosdyn_figures", quiet: bool = False) -> dict:
    """Run one figure script in this process; returns the JSON dict it wrote."""
    mod = load_figure_module(name)
    argv = ["--out", str(out)] + (["--quick"] if quick else []) + (["--quiet"] if quiet else [])
    return mod.main(argv)
