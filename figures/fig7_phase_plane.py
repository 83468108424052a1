r"""Figure 7 — the phase plane of gradient descent on a 2-D toy loss.

Loss: the tilted double well L(x, y) = ¼(x² − 1)² + ½(y − x)², with minima
θ± = ±(1, 1) and a saddle at 0. Its Hessian at θ± is [[3, −1], [−1, 1]], so the
sharpness is λ = 2 + √2 and the edge of stability is η* = 2/λ = 2 − √2 ≈ 0.586.

Panels
  (a) the displacement field D(θ) = −η∇L(θ) (its direction does not depend on η),
      the nullclines ∂L/∂x = 0 and ∂L/∂y = 0, and GD orbits from one start at
      η = 0.8·η* (converges), η = η* (marginal: converges only algebraically) and
      η = 1.15·η* (the minimum is unstable; the orbit settles on a period-2 cycle —
      the EoS oscillation). Each orbit's first ORBIT_SHOWN steps are drawn, fading with
      the step, and the period-2 cycle as two squares joined by a thick line;
  (b) the distance to the minimum against the step for the three orbits;
  (c) the half-width of the period-2 cycle against η − η*: a supercritical flip
      (period-doubling) bifurcation, whose normal form predicts amplitude ∝ (η − η*)^{1/2}
      (e.g. Kuznetsov, *Elements of Applied Bifurcation Theory*, §4.4);
  (d–f) basins at the three step sizes: which minimum (or which minimum's 2-cycle)
      each start reaches, or divergence. Above η* no start converges to a minimum.

The JSON records the sharpness, the edge 2/λ against the numerically measured
linear-stability threshold (:func:`eosdyn.analysis.stability.threshold`), the fate of
each orbit, the fitted exponent of the cycle amplitude (claimed 1/2) and the basin fractions.

    python figures/fig7_phase_plane.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import plot
from eosdyn.analysis.bifurcation import bifurcation_diagram, detect_period
from eosdyn.analysis.phase import basins, displacement_field, nullclines, orbits
from eosdyn.analysis.stability import threshold
from eosdyn.losses import from_sympy

NAME = "phase-plane"
NUMBER = 7
DESCRIPTION = "Phase plane of a 2-D double well: displacement field, GD orbits below/at/above 2/λ, basins"
FIGSIZE = (10.0, 6.4)
EXPR = "(x**2-1)**2/4 + (y-x)**2/2"
MINIMA = np.array([[1.0, 1.0], [-1.0, -1.0]])
FACTORS = (0.8, 1.0, 1.15)
START = np.array([1.3, 0.6])
ZOOM = (0.2, 1.8)
ORBIT_SHOWN = 12  # steps of each orbit drawn in panel (a)


def make_loss():
    return from_sympy(EXPR, ["x", "y"], min_value=0.0)


def compute(quick: bool, quiet: bool = False) -> dict:
    loss = make_loss()
    H = loss.hess(MINIMA[0])
    lam = float(np.linalg.eigvalsh(H)[-1])
    edge = 2.0 / lam
    thr = threshold(loss, "gd", MINIMA[0])

    n_orbit = 4000 if quick else 20000
    res_orbits = []
    for f in plot.progress(FACTORS, quiet=quiet, desc="orbits"):
        eta = f * edge
        o = orbits(loss, eta, START[None, :], n_orbit)[0]
        dist = np.linalg.norm(o - MINIMA[0], axis=1)
        per = detect_period(o[-64:], tol=1e-7)
        amp = 0.5 * float(np.linalg.norm(o[-1] - o[-2]))
        res_orbits.append({"factor": f, "lr": eta, "path": o, "dist": dist, "final_distance": float(dist[-1]),
                           "period": int(per), "half_width": amp})

    # the 2-cycle amplitude against η − η* (flip normal form: ∝ (η − η*)^{1/2})
    eps = np.geomspace(2e-3, 1e-1, 6 if quick else 16)
    bif = bifurcation_diagram(loss, edge * (1 + eps), MINIMA[0] + [0.05, -0.05],
                              transient=8000 if quick else 40000, keep=4)
    amp = 0.5 * np.linalg.norm(bif.orbit[:, 0] - bif.orbit[:, 1], axis=1)
    ok = (bif.period == 2) & (amp > 0)
    slope = float(np.polyfit(np.log(eps[ok]), np.log(amp[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")

    # basins; a 2-cycle's two points count as that minimum's attractor
    n_grid = 81 if quick else 301
    steps = 2000 if quick else 6000
    xs = np.linspace(-2.5, 2.5, n_grid)
    tol = 2e-2  # "reached the neighbourhood": at η = η* the approach is algebraic
    basin_maps, fractions = [], []
    for r in plot.progress(res_orbits, quiet=quiet, desc="basins"):
        targets = [MINIMA[0], MINIMA[1]]
        cyc = r["period"] == 2 and r["half_width"] > tol
        if cyc:
            # the loss is odd-symmetric (θ ↦ −θ), so −cycle is the other minimum's cycle
            p, q = r["path"][-1], r["path"][-2]
            targets += [p, q, -p, -q]
        lab = basins(loss, r["lr"], (xs, xs), np.array(targets), steps=steps, tol=tol)
        # map: 0 → minimum +, 1 → minimum −, 2/3 → cycle of +, 4/5 → cycle of −
        out = np.where(lab == 2, 2, lab)
        out = np.where((lab == 3), 2, out)
        out = np.where((lab == 4) | (lab == 5), 3, out)
        basin_maps.append(out)
        n = out.size
        fractions.append({"factor": r["factor"], "lr": r["lr"],
                          "minimum_plus": float((out == 0).sum() / n), "minimum_minus": float((out == 1).sum() / n),
                          "cycle_plus": float((out == 2).sum() / n), "cycle_minus": float((out == 3).sum() / n),
                          "diverged": float((out == -1).sum() / n), "undecided": float((out == -2).sum() / n)})

    field_xs = np.linspace(ZOOM[0], ZOOM[1], 21)
    vf = displacement_field(loss, 0.1, (field_xs, field_xs))
    nc = nullclines(loss, 0.1, (np.linspace(ZOOM[0], ZOOM[1], 201),) * 2)
    return dict(loss=loss, lam=lam, edge=edge, threshold=thr, orbits=res_orbits, eps=eps, amp=amp,
                period=bif.period, slope=slope, xs=xs, basins=basin_maps, fractions=fractions, field=vf,
                nullclines=nc, steps=steps, n_grid=n_grid, n_orbit=n_orbit, tol=tol, quick=quick)


def _fate(o):
    if o["factor"] == 1.0:
        return "marginal (algebraic decay)"
    if o["period"] == 1 and o["final_distance"] < 1e-8:
        return "converges"
    return f"period {o['period']}" if o["period"] > 1 else "no period found"


def _draw_orbit(ax, o, c, tol):
    """The first ORBIT_SHOWN steps of an orbit, fading with the step (the start is darkest), and its
    limit: the minimum, or the two points of its period-2 cycle joined by a thick line (a cycle
    narrower than ``tol``, the basins' tolerance, is the marginal orbit still closing in)."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgb

    p = o["path"][:ORBIT_SHOWN + 1]
    alpha = np.linspace(1.0, 0.25, len(p))
    rgba = np.array([(*to_rgb(c), a) for a in alpha])
    segs = np.stack([p[:-1], p[1:]], axis=1)
    ax.add_collection(LineCollection(segs, colors=rgba[:-1], linewidths=1.0, zorder=3))
    ax.scatter(p[:, 0], p[:, 1], s=np.linspace(14, 4, len(p)), c=rgba, lw=0, zorder=3)
    ax.plot([], [], "-o", ms=3, lw=1.0, color=c, label=f"η = {o['factor']:g}·2/λ")
    if o["period"] == 2 and o["half_width"] > tol:
        q = o["path"][-2:]
        ax.plot(q[:, 0], q[:, 1], "-", lw=2.2, color=c, alpha=0.9, zorder=4, solid_capstyle="round")
        ax.plot(q[:, 0], q[:, 1], "s", ms=6, mfc="white", mec=c, mew=1.5, zorder=4,
                label="its period-2 cycle")


def draw(r):
    from matplotlib.colors import ListedColormap

    fig, axes = plot.new_figure(2, 3, size=FIGSIZE)
    ax = axes[0, 0]
    vf = r["field"]
    mag = vf.magnitude
    with np.errstate(invalid="ignore", divide="ignore"):
        ax.quiver(vf.X, vf.Y, vf.U / mag, vf.V / mag, np.log10(mag + 1e-12), cmap="Greys", scale=32,
                  width=0.004, alpha=0.8)
    for seg in r["nullclines"].u_zero:
        ax.plot(seg[:, 0], seg[:, 1], color="0.35", lw=0.8, ls="-")
    for seg in r["nullclines"].v_zero:
        ax.plot(seg[:, 0], seg[:, 1], color="0.35", lw=0.8, ls=":")
    cols = [plot.color("gd"), plot.color("heavyball"), plot.color("adam")]
    for o, c in zip(r["orbits"], cols):
        _draw_orbit(ax, o, c, r["tol"])
    ax.plot([], [], color="0.35", lw=0.8, ls="-", label="∂L/∂x = 0")
    ax.plot([], [], color="0.35", lw=0.8, ls=":", label="∂L/∂y = 0")
    ax.plot(*MINIMA.T, "k*", ms=9, zorder=5)
    ax.set_xlim(*ZOOM)
    ax.set_ylim(*ZOOM)
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("field −∇L and GD orbits")
    ax.legend(loc="upper left", fontsize=6, handlelength=1.6, framealpha=0.85, frameon=True)
    plot.panel_label(ax, "a")

    ax = axes[0, 1]
    for o, c in zip(r["orbits"], cols):
        ax.loglog(np.arange(1, len(o["dist"]) + 1), np.maximum(o["dist"], 1e-17), color=c,
                  label=f"{o['factor']:g}·2/λ: " + _fate(o))
    ax.set_xlabel("step t")
    ax.set_ylabel("‖θ_t − θ*‖")
    ax.set_title("distance to the minimum")
    ax.legend(fontsize=7)
    plot.panel_label(ax, "b")

    ax = axes[0, 2]
    ok = r["period"] == 2
    ax.loglog(r["eps"][ok], r["amp"][ok], "o", color=plot.color("gd"), label="measured half-width")
    if np.isfinite(r["slope"]):
        c0 = np.exp(np.mean(np.log(r["amp"][ok]) - 0.5 * np.log(r["eps"][ok])))
        ax.loglog(r["eps"], c0 * r["eps"] ** 0.5, "--", color=plot.color("theory"), label="∝ (η/η* − 1)$^{1/2}$")
    ax.set_xlabel("η/η* − 1")
    ax.set_ylabel("2-cycle half-width")
    ax.set_title(f"flip bifurcation: slope {r['slope']:.3f}")
    ax.legend(fontsize=7)
    plot.panel_label(ax, "c")

    cmap = ListedColormap(["#FFFFFF", "#BBBBBB", "#0072B2", "#D55E00", "#56B4E9", "#F5B78E"])
    # label values -2..3 -> colour index 0..5
    xs = r["xs"]
    for k, (lab, fr) in enumerate(zip(r["basins"], r["fractions"])):
        ax = axes[1, k]
        ax.imshow(lab + 2, origin="lower", extent=(xs[0], xs[-1], xs[0], xs[-1]), cmap=cmap, vmin=-0.5,
                  vmax=5.5, interpolation="nearest")
        ax.plot(*MINIMA.T, "k*", ms=6)
        ax.set_title(f"basins, η = {fr['factor']:g}·2/λ = {fr['lr']:.3f}")
        ax.set_xlabel("x")
        if k == 0:
            ax.set_ylabel("y")
        plot.panel_label(ax, "def"[k])
    from matplotlib.patches import Patch

    handles = [Patch(color="#0072B2", label="→ minimum +"), Patch(color="#D55E00", label="→ minimum −"),
               Patch(color="#56B4E9", label="→ 2-cycle near +"), Patch(color="#F5B78E", label="→ 2-cycle near −"),
               Patch(color="#BBBBBB", label="diverges"), Patch(facecolor="#FFFFFF", edgecolor="0.5",
                                                               label="undecided")]
    axes[1, 2].legend(handles=handles, loc="upper left", fontsize=6, framealpha=0.9, frameon=True)
    fig.suptitle("GD on L = ¼(x²−1)² + ½(y−x)²: sharpness at the minima λ = 2+√2, edge 2/λ = 2−√2")
    return fig


def summarize(r) -> dict:
    thr = r["threshold"]
    orb = [{k: v for k, v in o.items() if k not in ("path", "dist")} for o in r["orbits"]]
    below, at, above = r["orbits"]
    claims = [
        plot.claim("GD is linearly stable at a minimum iff η < 2/λ", r["edge"], thr.numeric,
                   abs(thr.numeric / r["edge"] - 1) < 1e-6, "linear stability of x ↦ x − ηHx",
                   "measured: bisection on the spectral radius of the GD map's Jacobian"),
        plot.claim("below 2/λ the orbit converges to the minimum", "distance → 0", below["final_distance"],
                   below["final_distance"] < 1e-8),
        plot.claim("above 2/λ the minimum repels and a period-2 orbit appears", "period 2",
                   {"period": above["period"], "half_width": above["half_width"]},
                   above["period"] == 2 and above["half_width"] > 1e-3),
        plot.claim("2-cycle half-width ∝ (η − η*)^{1/2} (supercritical flip)", 0.5, r["slope"],
                   abs(r["slope"] - 0.5) < 0.05, "normal form of the flip bifurcation"),
    ]
    return {
        "title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
        "loss": EXPR, "minima": MINIMA, "sharpness_at_minimum": r["lam"], "edge_2_over_lambda": r["edge"],
        "threshold_numeric": thr.numeric, "threshold_ratio": thr.numeric / r["edge"],
        "start": START, "orbit_steps": r["n_orbit"], "orbits": orb,
        "flip": {"eps": r["eps"], "half_width": r["amp"], "period": r["period"], "fitted_exponent": r["slope"]},
        "basins": {"grid": [float(r["xs"][0]), float(r["xs"][-1]), r["n_grid"]], "steps": r["steps"],
                   "tol": r["tol"], "fractions": r["fractions"]},
        "claims": claims,
    }


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)

if __name__ == "__main__":
    main()
