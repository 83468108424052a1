r"""One-call plots of eosdyn's analysis results: orbit diagrams, phase planes, basins, sharpness.

Exported as ``eosdyn.plot.bifurcation``, ``eosdyn.plot.phase_plane``, ``eosdyn.plot.basins``
and ``eosdyn.plot.sharpness``. Each draws on the Axes ``ax`` it is given (or, when ``ax``
is None, on a new ``matplotlib.pyplot`` figure, so that it shows inline in a notebook),
labels the axes with what they measure, returns the Axes, and never calls ``plt.show()``
or saves anything: the caller decides. Colours are the package's (:data:`eosdyn.plot.COLORS`).

::

    from eosdyn import analysis, plot
    res = analysis.bifurcation_diagram(LogisticCubic(), np.linspace(1.5, 2.6, 400))
    ax = plot.bifurcation(res)                       # iterates vs η
    ax = plot.sharpness(eosdyn.simulate(loss, GD(0.01), θ0, 5000, track_sharpness=True))
"""
from __future__ import annotations

import numpy as np

__all__ = ["bifurcation", "phase_plane", "basins", "sharpness"]


def _axes(ax):
    if ax is not None:
        if not hasattr(ax, "plot") or not hasattr(ax, "figure"):
            raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    import matplotlib.pyplot as plt

    return plt.figure().add_subplot()


def _param_label(parameter: str) -> str:
    return {"lr": "step size η", "alpha": "EoS-Ada step scale α", "r": "parameter r"}.get(
        parameter, f"parameter {parameter}")


def bifurcation(result, ax=None, *, coord: int = 0, doublings=None, color: str | None = None,
                s: float = 0.2, **scatter_kw):
    """Orbit diagram: the kept iterates of a :class:`eosdyn.analysis.BifurcationResult` against the
    swept parameter (one dot per iterate, coordinate ``coord`` of θ or x).

    ``doublings``: an optional :class:`eosdyn.analysis.DoublingResult` (or an array of
    parameter values) drawn as dotted vertical lines. Diverged parameter values (period −1)
    have NaN iterates and draw nothing. Returns the Axes.
    """
    from ..analysis.bifurcation import BifurcationResult
    from . import COLORS

    if not isinstance(result, BifurcationResult):
        raise TypeError(f"result must be a BifurcationResult (eosdyn.analysis.bifurcation_diagram), "
                        f"got {type(result).__name__}")
    d = result.orbit.shape[2]
    if isinstance(coord, bool) or not isinstance(coord, (int, np.integer)) or not 0 <= coord < d:
        raise ValueError(f"coord must be an integer in [0, {d - 1}] (a coordinate of the orbit), got {coord!r}")
    ax = _axes(ax)
    x, y = result.points(int(coord))
    ok = np.isfinite(y)
    ax.scatter(x[ok], y[ok], s=s, color=color or COLORS["map"], marker=".", linewidths=0, **scatter_kw)
    if doublings is not None:
        vals = np.asarray(getattr(doublings, "lrs", doublings), float).ravel()
        for v in vals:
            ax.axvline(v, ls=":", lw=0.8, color=COLORS["edge"])
    ax.set_xlabel(_param_label(result.parameter))
    ax.set_ylabel(f"iterate x{coord}" if result.parameter == "r" else f"θ{coord + 1} (last {result.keep} iterates)")
    return ax


def phase_plane(field, ax=None, *, nullclines=None, orbits=None, quiver: bool = True, normalize: bool = True,
                **quiver_kw):
    """Phase portrait: the displacement field F(θ) − θ as arrows, optionally nullclines and orbits.

    ``field`` is a :class:`eosdyn.analysis.VectorField` (:func:`eosdyn.analysis.displacement_field`)
    or a :class:`eosdyn.analysis.Nullclines` (whose field is drawn, and its nullclines unless
    ``nullclines=False``). ``normalize=True`` draws unit arrows (direction only; the length of
    −η∇L varies by orders of magnitude) coloured by log10 of the displacement's length.
    ``orbits``: an (n, T, 2) array (:func:`eosdyn.analysis.orbits`) or a list of (T, 2) paths,
    drawn as lines with a dot at the start. For a rule with state the field is that of a
    slice (``field.state`` is not None) and the title says so. Returns the Axes.
    """
    from ..analysis.phase import Nullclines, VectorField
    from . import COLORS

    nc = None
    if isinstance(field, Nullclines):
        nc = field if nullclines is None else nullclines
        field = field.field
    elif nullclines is not None:
        nc = nullclines
    if nc is False:
        nc = None
    if not isinstance(field, VectorField):
        raise TypeError(f"field must be a VectorField or Nullclines (eosdyn.analysis), got {type(field).__name__}")
    if nc is not None and not isinstance(nc, Nullclines):
        raise TypeError(f"nullclines must be a Nullclines result or None, got {type(nc).__name__}")
    ax = _axes(ax)
    if quiver:
        U, V = field.U, field.V
        mag = field.magnitude
        if normalize:
            with np.errstate(divide="ignore", invalid="ignore"):
                n = np.where(mag > 0, mag, 1.0)
                U, V = U / n, V / n
                c = np.log10(np.where(mag > 0, mag, np.nan))
            ax.quiver(field.X, field.Y, U, V, c, cmap="viridis", angles="xy", pivot="mid", **quiver_kw)
        else:
            ax.quiver(field.X, field.Y, U, V, angles="xy", color=COLORS["loss"], pivot="mid", **quiver_kw)
    if nc is not None:
        for k, seg in enumerate(nc.u_zero):
            ax.plot(seg[:, 0], seg[:, 1], color="#D55E00", lw=1.2, label="D₁ = 0" if k == 0 else None)
        for k, seg in enumerate(nc.v_zero):
            ax.plot(seg[:, 0], seg[:, 1], color="#009E73", lw=1.2, label="D₂ = 0" if k == 0 else None)
    if orbits is not None:
        paths = [np.asarray(p, float) for p in orbits]
        for p in paths:
            if p.ndim != 2 or p.shape[1] != 2:
                raise ValueError(f"each orbit must be a (T, 2) path, got shape {p.shape}")
            ax.plot(p[:, 0], p[:, 1], color="#000000", lw=0.8, marker=".", ms=2)
            ax.plot(p[0, 0], p[0, 1], "o", color="#000000", ms=3)
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    if field.state is not None:
        ax.set_title("one step from a slice of the state (not invariant)", fontsize="small")
    ax.set_xlim(field.X.min(), field.X.max())
    ax.set_ylim(field.Y.min(), field.Y.max())
    return ax


def basins(labels, grid, ax=None, *, minima=None, names=None):
    """Basin map: each grid point coloured by the minimum its orbit reaches
    (:func:`eosdyn.analysis.basins`); diverged (−1) light grey, undecided (−2) black.

    ``grid`` = (xs, ys) as passed to ``basins``; ``minima`` (k, 2) are marked with white
    crosses; ``names`` label the basins in the legend. Returns the Axes.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from ..analysis.phase import BASIN_DIVERGED, BASIN_UNDECIDED
    from . import _CYCLE, COLORS

    L = np.asarray(labels)
    if L.ndim != 2 or L.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 2-D integer array (eosdyn.analysis.basins), got "
                         f"{L.dtype} of shape {L.shape}")
    try:
        xs, ys = (np.asarray(g, float) for g in grid)
    except (TypeError, ValueError):
        raise ValueError("grid must be a pair (xs, ys) of 1-D coordinate arrays") from None
    if L.shape != (ys.size, xs.size):
        raise ValueError(f"labels must have shape (len(ys), len(xs)) = {(ys.size, xs.size)}, got {L.shape}")
    if np.any(L < BASIN_UNDECIDED):
        raise ValueError(f"labels must be >= {BASIN_UNDECIDED} (undecided), got min {L.min()}")
    k = max(int(L.max()) + 1, 0)
    colors = ["#000000", COLORS["diverged"]] + [_CYCLE[i % len(_CYCLE)] for i in range(k)]
    ax = _axes(ax)
    ax.pcolormesh(xs, ys, L - BASIN_UNDECIDED, cmap=ListedColormap(colors), vmin=-0.5,
                  vmax=len(colors) - 0.5, shading="nearest")
    handles = []
    present = set(np.unique(L).tolist())
    for i in range(k):
        if i in present:
            nm = names[i] if names is not None and i < len(names) else f"minimum {i}"
            handles.append(Patch(color=colors[i + 2], label=nm))
    if BASIN_DIVERGED in present:
        handles.append(Patch(color=colors[1], label="diverged"))
    if BASIN_UNDECIDED in present:
        handles.append(Patch(color=colors[0], label="undecided"))
    if minima is not None:
        m = np.asarray(minima, float).reshape(-1, 2)
        ax.plot(m[:, 0], m[:, 1], "x", color="white", ms=6, mew=1.5)
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    ax.set_xlabel("θ₁ (start)")
    ax.set_ylabel("θ₂ (start)")
    return ax


def sharpness(data, lr=None, ax=None, *, step=None, factor: float = 2.0, color: str | None = None,
              label: str | None = None, **plot_kw):
    """Sharpness λ_max(∇²L) against the step, with the edge of stability ``factor/lr`` (2/η).

    ``data``: a :class:`eosdyn.Trajectory` or :class:`eosdyn.EnsembleResult` run with
    ``track_sharpness=True`` (an ensemble draws one thin line per trajectory), or an array of
    sharpness values (R,) or (n, R) with ``step`` (R,) (default 0, 1, …). ``lr`` defaults to
    the run's constant step size (``params["rule_lr"]``); with ``lr=None`` and none known no
    edge line is drawn. ``factor`` is the edge constant: 2 for GD, 2(1+β) for heavy-ball
    (:meth:`eosdyn.rules.Rule.edge_constant`). Returns the Axes.
    """
    from . import COLORS, edge_line

    params = getattr(data, "params", None)
    if hasattr(data, "sharpness") and hasattr(data, "step"):
        if data.sharpness is None:
            raise ValueError("this result has no sharpness record: run it with track_sharpness=True")
        Y = np.asarray(data.sharpness, float)
        x = np.asarray(data.step, float) if step is None else np.asarray(step, float)
        if lr is None and isinstance(params, dict) and params.get("rule_lr") is not None:
            lr = params["rule_lr"]
    else:
        try:
            Y = np.asarray(data, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"data must be a Trajectory, an EnsembleResult or an array of sharpness values, "
                            f"got {type(data).__name__}") from None
        x = np.arange(Y.shape[-1], dtype=float) if step is None else np.asarray(step, float)
    if Y.ndim not in (1, 2):
        raise ValueError(f"sharpness must be (R,) or (n, R), got shape {Y.shape}")
    if x.shape != (Y.shape[-1],):
        raise ValueError(f"step must have shape ({Y.shape[-1]},) to match the sharpness record, got {x.shape}")
    ax = _axes(ax)
    col = color or COLORS["gd"]
    if Y.ndim == 1:
        ax.plot(x, Y, color=col, label=label, **plot_kw)
    else:
        for i, row in enumerate(Y):
            ax.plot(x, row, color=col, lw=0.8, alpha=0.6, label=label if i == 0 else None, **plot_kw)
    if lr is not None:
        edge_line(ax, lr, factor=factor)
    ax.set_xlabel("step")
    ax.set_ylabel("sharpness λ_max(∇²L)")
    if lr is not None or label is not None:
        ax.legend(loc="best", fontsize="small")
    return ax
