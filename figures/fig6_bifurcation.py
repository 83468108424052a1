r"""Figure 6 — the orbit (bifurcation) diagram of gradient descent against the step size.

Loss: the logistic-conjugate cubic f(x) = x²/2 − x³/3 (:class:`eosdyn.losses.LogisticCubic`).
One GD step x ↦ (1 − η)x + ηx² is conjugate to the logistic map y ↦ r y(1 − y) with
r = 1 + η (May, Nature 261, 1976), so the whole period-doubling route to chaos is known in
closed form: the minimum x = 0 (sharpness f''(0) = 1) loses stability at the edge of
stability η = 2/λ = 2 (r = 3), the 2-cycle at η = √6 (r = 1 + √6), then 4 → 8 at
r = 3.544090…, 3.564407…, accumulating at r∞ = 3.569946… (η∞ ≈ 2.5699) with the
Feigenbaum ratio δ = 4.669201… (Feigenbaum, J. Stat. Phys. 19, 1978); at η = 3 (r = 4)
the map is fully chaotic with Lyapunov exponent ln 2.

Panels
  (a) the orbit diagram: for each η, the iterates kept after a transient
      (:func:`eosdyn.analysis.bifurcation.bifurcation_diagram`), with the measured
      period doublings (:func:`~eosdyn.analysis.bifurcation.period_doubling_points`) marked;
  (b) the Lyapunov exponent of the orbit (:func:`eosdyn.analysis.lyapunov.lyapunov_spectrum_rule`),
      negative on periodic windows, zero at each doubling, positive in chaos.

The JSON holds the measured doubling points against the closed forms, the measured
Feigenbaum ratios against the logistic map's, and the Lyapunov exponent at η = 3 against ln 2.

    python figures/fig6_bifurcation.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import plot
from eosdyn.analysis.bifurcation import bifurcation_diagram, period_doubling_points
from eosdyn.analysis.lyapunov import lyapunov_spectrum_rule
from eosdyn.losses import LogisticCubic
from eosdyn.rules import GD

NAME = "bifurcation"
NUMBER = 6
DESCRIPTION = "Orbit diagram of GD vs η on the logistic-conjugate cubic, period doublings, Lyapunov exponent"
FIGSIZE = (8.0, 6.0)
X0 = 0.1
#: logistic-map period-doubling parameters r_k (2^{k-1} → 2^k); r₁ = 3, r₂ = 1 + √6,
#: r₃, r₄, r₅ from the literature (e.g. Briggs, Math. Comp. 57, 1991)
R_DOUBLING = np.array([3.0, 1.0 + np.sqrt(6.0), 3.544090359551922, 3.564407266095, 3.568759419544])
R_INF = 3.569945671870944
FEIGENBAUM_DELTA = 4.669201609102990


def compute(quick: bool, quiet: bool = False) -> dict:
    loss = LogisticCubic()
    n_eta = 300 if quick else 1500
    etas = np.linspace(1.8, 3.0, n_eta)
    keep = 64 if quick else 200
    bif = bifurcation_diagram(loss, etas, [X0], transient=1000 if quick else 5000, keep=keep)

    transient = 20000 if quick else 200000
    dbl = period_doubling_points(loss, 1.8, R_INF - 1.0 - 0.003, [X0], n_scan=100 if quick else 400,
                                 transient=transient, keep=64, max_period=16 if quick else 32)

    n_ly = 150 if quick else 1200
    ly_etas = np.linspace(1.8, 3.0, n_ly)
    ly_steps = 2000 if quick else 20000
    ly = np.array([lyapunov_spectrum_rule(loss, GD(float(e)), [X0], ly_steps, transient=500).exponents[0]
                   for e in plot.progress(ly_etas, quiet=quiet, desc="Lyapunov")])
    ly3 = lyapunov_spectrum_rule(loss, GD(3.0), [X0], 20000 if quick else 200000, transient=1000).exponents[0]
    return dict(etas=etas, bif=bif, dbl=dbl, ly_etas=ly_etas, ly=ly, ly3=float(ly3), transient=transient,
                ly_steps=ly_steps, quick=quick)


def draw(r):
    fig, (ax, bx) = plot.new_figure(2, 1, size=FIGSIZE, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    x, y = r["bif"].points(0)
    ax.plot(x, y, ",", color=plot.color("gd"), alpha=0.6, rasterized=True)
    ax.plot([], [], ".", color=plot.color("gd"), label="GD orbit after a transient")
    for k, e in enumerate(r["dbl"].lrs):
        ax.axvline(e, color="0.5", lw=0.6, ls=":", label="measured doublings" if k == 0 else None)
    plot.edge_line(ax, 1.0, orientation="v", label="2/λ = 2 (edge of stability)")
    ax.axvline(R_INF - 1, color="k", lw=0.8, ls="-.", label=f"accumulation η∞ = {R_INF - 1:.4f}")
    ax.set_ylabel("x (GD iterate)")
    ax.set_title("GD on f(x) = x²/2 − x³/3  ≅  logistic map with r = 1 + η")
    ax.legend(loc="lower left", fontsize=7)
    plot.panel_label(ax, "a")
    sec = ax.secondary_xaxis("top", functions=(lambda e: e + 1, lambda r_: r_ - 1))
    sec.set_xlabel("logistic r = 1 + η")

    bx.plot(r["ly_etas"], r["ly"], color=plot.color("adam"), lw=0.8)
    bx.axhline(0, color="k", lw=0.6)
    bx.axhline(np.log(2), color="0.5", lw=0.6, ls="--", label="ln 2 (r = 4)")
    bx.set_ylim(max(-2.5, np.nanmin(r["ly"]) - 0.1), 0.9)
    bx.set_xlabel("step size η")
    bx.set_ylabel("Lyapunov exponent")
    bx.legend(loc="lower left", fontsize=7)
    plot.panel_label(bx, "b")
    return fig


def summarize(r) -> dict:
    dbl = r["dbl"]
    exact = R_DOUBLING - 1.0
    meas = np.asarray(dbl.lrs)
    k = min(len(meas), len(exact))
    rel = np.abs(meas[:k] / exact[:k] - 1)
    exact_ratios = (exact[1:-1] - exact[:-2]) / (exact[2:] - exact[1:-1])
    fr = dbl.feigenbaum_ratios
    m = min(len(fr), len(exact_ratios))
    periodic = r["ly_etas"] < exact[0] - 0.01
    tol = 1e-3 if r["quick"] else 2e-4
    claims = [
        plot.claim("the minimum loses stability at the edge η = 2/λ = 2 (r = 3)", 2.0, float(meas[0]) if k else None,
                   bool(k and rel[0] < tol), "May 1976; linear stability"),
        plot.claim("period doublings of GD sit at η_k = r_k − 1 of the logistic map", exact[:k], meas[:k],
                   bool(k >= 3 and np.all(rel < tol)), "conjugacy x = 1 − (1+η)y/η",
                   f"relative tolerance {tol:g}; the bisection stops slightly before each doubling "
                   f"(slow convergence near a bifurcation, transient {r['transient']})"),
        plot.claim("ratios of successive doubling intervals → Feigenbaum δ = 4.6692", exact_ratios[:m], fr[:m],
                   bool(m >= 1 and np.all(np.abs(fr[:m] / exact_ratios[:m] - 1) < 0.02)),
                   "Feigenbaum 1978", f"δ∞ = {FEIGENBAUM_DELTA}; the first ratios of the logistic map are "
                   "4.751, 4.656"),
        plot.claim("Lyapunov exponent at η = 3 (r = 4) is ln 2", float(np.log(2)), r["ly3"],
                   abs(r["ly3"] / np.log(2) - 1) < 0.02, "Ulam–von Neumann conjugacy of r = 4"),
        plot.claim("Lyapunov exponent < 0 below the first doubling (stable fixed point)", "< 0",
                   float(np.max(r["ly"][periodic])), bool(np.all(r["ly"][periodic] < 0))),
    ]
    return {
        "title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
        "loss": "x**2/2 - x**3/3", "theta0": X0, "lr_range": [float(r["etas"][0]), float(r["etas"][-1])],
        "n_lr": len(r["etas"]), "edge_2_over_lambda": 2.0,
        "doubling_lrs_measured": meas, "doubling_from_period": dbl.from_period,
        "doubling_lrs_exact": exact[:k], "doubling_relative_error": rel,
        "feigenbaum_ratios_measured": fr, "feigenbaum_ratios_exact": exact_ratios[:m],
        "feigenbaum_delta": FEIGENBAUM_DELTA, "accumulation_lr": R_INF - 1.0,
        "lyapunov_at_lr_3": r["ly3"], "ln2": float(np.log(2)),
        "lyapunov": {"lr": r["ly_etas"], "exponent": r["ly"], "steps": r["ly_steps"]},
        "claims": claims,
    }


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)

if __name__ == "__main__":
    main()
