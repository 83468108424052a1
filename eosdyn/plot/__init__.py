"""Matplotlib helpers shared by every eosdyn figure: one place for colours, the 2/η line,
seed bands and the PNG + PDF + JSON output.

Figures are drawn on :class:`matplotlib.figure.Figure` objects created by
:func:`new_figure` — never through ``pyplot`` — so they render with the Agg canvas
whatever backend is active (no display is needed, and a notebook's inline backend
is left alone)::

    from eosdyn import plot

    fig, axes = plot.new_figure(1, 2, size="wide")
    plot.seed_band(axes[0], steps, sharpness_runs, color=plot.color("gd"), label="GD")
    plot.edge_line(axes[0], lr=0.01)                 # the 2/η line, labelled
    plot.savefig(fig, "out/", "my-figure", data={"plateau": 198.7})

:func:`savefig` writes ``NAME.png``, ``NAME.pdf`` and ``NAME.json`` (the numbers the
figure shows, plus the file names and the PNG's pixel size) and returns the JSON dict.
:func:`figure_parser` and :func:`progress` give figure scripts the common command line
(``--quick``, ``--out``, ``--quiet``) and tqdm bars that are silent off a terminal.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .helpers import basins, bifurcation, phase_plane, sharpness

__all__ = [
    "bifurcation", "phase_plane", "basins", "sharpness",
    "run_figure", "figure_main",
    "COLORS", "color", "RC", "DPI", "SIZES", "new_figure", "edge_line", "seed_band", "mark_threshold",
    "savefig", "to_jsonable", "figure_parser", "progress", "claim", "panel_label", "mean_sd",
]

#: One colour per update rule / quantity, used by every figure (Okabe–Ito palette, colour-blind safe).
#: The rules' colours are their own (``Rule.color``, :mod:`eosdyn.rules.registry`); the rest are
#: the torch baselines and the quantities the figures draw.
_QUANTITY_COLORS = {
    "adamw": "#D55E00",
    "sgd": "#0072B2",
    "sgdm": "#CC79A7",
    "sqrt-gd": "#E69F00",
    "map": "#0072B2",
    "sde": "#D55E00",
    "theory": "#000000",
    "edge": "#C0392B",
    "loss": "#555555",
    "diverged": "#BBBBBB",
}
_CYCLE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def _colors():
    from ..rules import rules

    return {**{name: cls.color for name, cls in rules().items()}, **_QUANTITY_COLORS}


COLORS = _colors()
#: Shared rcParams (applied inside :func:`new_figure`).
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.3,
    "savefig.dpi": 150,
    "figure.dpi": 150,
}
DPI = 150
#: Named figure sizes in inches (width, height).
SIZES = {
    "single": (4.0, 3.0),
    "wide": (8.0, 3.2),
    "tall": (8.0, 5.6),
    "grid": (8.0, 6.4),
}


def color(name: str, i: int = 0) -> str:
    """The colour of a rule (any name or alias the registry knows: ``"gd"``, ``"hb"``, …) or of a
    quantity (``"sde"``, ``"edge"``, …); else the i-th colour of the cycle."""
    from ..rules.registry import normalise, rule_class

    key = str(name).lower().replace("_", "").replace(" ", "")
    key = {"sgd+momentum": "sgdm"}.get(key, key)
    if key in _QUANTITY_COLORS:
        return _QUANTITY_COLORS[key]
    try:
        return rule_class(normalise(name)).color
    except (ValueError, TypeError):
        return _CYCLE[i % len(_CYCLE)]


def new_figure(nrows: int = 1, ncols: int = 1, size="wide", **subplot_kw):
    """A Figure (Agg canvas, constrained layout, shared style) and its axes array (squeezed).

    ``size`` is a key of :data:`SIZES` or a (width, height) pair in inches. The PNG is
    ``round(width·DPI) × round(height·DPI)`` pixels (savefig does not crop).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = SIZES[size] if isinstance(size, str) else size
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)
    fig._eosdyn_rc = dict(RC)
    return fig, axes


def edge_line(ax, lr, *, factor: float = 2.0, orientation: str = "h", label: str | None = "auto",
              color_: str | None = None, **kw):
    """Draw the edge of stability ``factor/lr`` (default 2/η) as a dashed line; returns its value.

    ``orientation="h"`` draws y = 2/η (sharpness plots), ``"v"`` draws x = 2/η.
    ``label="auto"`` labels it "2/η = …"; pass None for no label.
    """
    lr = float(lr)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be finite and > 0, got {lr!r}")
    v = factor / lr
    if label == "auto":
        label = f"{factor:g}/η = {v:.3g}" if factor != 2.0 else f"2/η = {v:.3g}"
    style = dict(ls="--", lw=1.0, color=color_ or COLORS["edge"], label=label, zorder=1)
    style.update(kw)
    (ax.axhline if orientation == "h" else ax.axvline)(v, **style)
    return v


def mark_threshold(ax, x, label=None, color_=None, **kw):
    """A vertical dotted line at a critical step size (or any x), labelled."""
    style = dict(ls=":", lw=1.2, color=color_ or COLORS["edge"], label=label, zorder=1)
    style.update(kw)
    ax.axvline(float(x), **style)


def mean_sd(Y, axis: int = 0):
    """NaN-aware mean and standard deviation over ``axis`` (runs that diverged are NaN and skipped)."""
    Y = np.asarray(Y, dtype=float)
    ok = np.isfinite(Y)
    cnt = ok.sum(axis=axis)
    tot = np.where(ok, Y, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
        dev = np.where(ok, Y - np.expand_dims(mean, axis), 0.0)
        var = np.where(cnt > 1, (dev ** 2).sum(axis=axis) / np.maximum(cnt - 1, 1), 0.0)
    return mean, np.sqrt(var)


def seed_band(ax, x, Y, *, color: str | None = None, label: str | None = None, alpha: float = 0.25,
              log: bool = False, **kw):
    """Plot the mean over seeds (rows of ``Y``) with a shaded mean ± sd band; returns (mean, sd).

    With ``log=True`` the statistics are those of log10(Y) (for losses spanning decades)
    and the band is drawn back in linear units.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    x = np.asarray(x, dtype=float)
    if Y.shape[1] != x.shape[0]:
        raise ValueError(f"Y must be (n_seeds, len(x)) = (n, {x.shape[0]}), got {Y.shape}")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            L = np.where(Y > 0, np.log10(np.where(Y > 0, Y, 1.0)), np.nan)
        m, s = mean_sd(L)
        lo, mid, hi = 10 ** (m - s), 10 ** m, 10 ** (m + s)
    else:
        m, s = mean_sd(Y)
        lo, mid, hi = m - s, m, m + s
    (line,) = ax.plot(x, mid, color=color, label=label, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, lw=0)
    return m, s


def panel_label(ax, text):
    """A bold panel letter in the top-left corner."""
    ax.text(-0.16, 1.0, text, transform=ax.transAxes, fontweight="bold", va="bottom", ha="left", fontsize=11)


def claim(what: str, claimed, measured, holds: bool, source: str = "", note: str = "") -> dict:
    """A claimed-vs-measured record for a figure's JSON (``holds`` is stated, whatever it is)."""
    return {"claim": what, "claimed": claimed, "measured": measured, "holds": bool(holds),
            "source": source, "note": note}


def to_jsonable(obj):
    """Numpy scalars/arrays -> Python; NaN/inf -> None (strict JSON); tuples -> lists; Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def savefig(fig, out_dir, name: str, data: dict | None = None) -> dict:
    """Write ``NAME.png``, ``NAME.pdf`` and ``NAME.json`` into ``out_dir``; return the JSON dict.

    The JSON holds ``data`` (made strict-JSON: NaN/inf become null) plus ``files``,
    ``png_size`` [width, height] in pixels and the eosdyn version.
    """
    import matplotlib

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, h = fig.get_size_inches()
    png = out / f"{name}.png"
    pdf = out / f"{name}.pdf"
    js = out / f"{name}.json"
    rc = getattr(fig, "_eosdyn_rc", RC)
    with matplotlib.rc_context(rc):
        fig.savefig(png, dpi=DPI)
        fig.savefig(pdf)
    try:
        from importlib.metadata import version

        ver = version("eosdyn")
    except Exception:  # pragma: no cover
        ver = "unknown"
    record = {"figure": name}
    record.update(data or {})
    record["files"] = {"png": png.name, "pdf": pdf.name, "json": js.name}
    record["png_size"] = [int(round(w * DPI)), int(round(h * DPI))]
    record["eosdyn_version"] = ver
    record = to_jsonable(record)
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    os.replace(tmp, js)
    return record


def figure_main(name: str, description: str, compute, draw, summarize, *, torch_threads: int | None = None):
    """The ``main(argv=None) -> dict`` of a figure script: :func:`run_figure` with its parts bound.

    A script ends with ``main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)``
    and ``if __name__ == "__main__": main()``; ``eosdyn figure NAME`` calls the same ``main``.
    """
    def main(argv=None) -> dict:
        return run_figure(name, description, compute, draw, summarize, argv, torch_threads=torch_threads)

    main.__doc__ = f"Run figure {name!r} ({description}); argv: --quick, --out DIR, --quiet."
    return main


def run_figure(name: str, description: str, compute, draw, summarize, argv=None, *,
               torch_threads: int | None = None) -> dict:
    """The ``main`` of every figure script: parse ``--quick/--out/--quiet``, run
    ``compute(quick, quiet)``, ``draw(r)`` and ``summarize(r)`` under a timer, and write
    PNG + PDF + JSON (with ``wall_time_s``) through :func:`savefig`.

    ``torch_threads`` pins torch's intra-op threads for the run (the torch figures use 1:
    their models are tiny, and one thread is fastest and immune to oversubscription).
    """
    args = figure_parser(description, prog=f"eosdyn figure {name}").parse_args(argv)
    restore = None
    if torch_threads is not None:
        import torch

        restore = torch.get_num_threads()
        torch.set_num_threads(torch_threads)
    try:
        with Timer() as t:
            r = compute(args.quick, args.quiet)
            fig = draw(r)
            data = summarize(r)
    finally:
        if restore is not None:
            import torch

            torch.set_num_threads(restore)
    data["wall_time_s"] = t.seconds
    return savefig(fig, args.out, name, data)


def figure_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line every figure script shares: ``--quick``, ``--out DIR``, ``--quiet``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true",
                   help="CI-sized run (under a minute on 2 cores) instead of the publication-quality one")
    p.add_argument("--out", default="eosdyn_figures", metavar="DIR",
                   help="output directory for NAME.png, NAME.pdf and NAME.json (default: ./eosdyn_figures)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def progress(iterable, *, quiet: bool = False, desc: str | None = None, total: int | None = None):
    """tqdm over ``iterable``, disabled with ``quiet`` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    disable = quiet or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False)


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        return False
