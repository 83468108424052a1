r"""Figure 3 — linear networks: which step sizes still converge, and to how sharp a minimum.

Crăciun & Ghoshdastidar (2024, arXiv:2402.13108) show for deep linear networks with the
squared loss that the global minima form a manifold M and that, above the critical step size

    η* = 2 / min_{θ ∈ M} λ_max(∇²L(θ)),

every minimum is linearly unstable and GD converges only from a set of initialisations of
measure zero; below η*, GD converges from a set of positive measure, and only to minima
with λ_max < 2/η (the linearly stable ones). η* is computed by
:func:`eosdyn.analysis.linear_networks.linear_network_stability` (a minimisation of the
sharpness over M) and, for the depth-D scalar network ½(w₁⋯w_D − 1)², equals the closed
form 2/D (the balanced minimum is the flattest, by AM–GM).

Three networks: the scalar networks of depth 2 and 3, and a 3→3→2 linear network fitted to
8 random examples (y = Ax). For each, GD runs from the same random initialisations at a grid
of step sizes (:func:`eosdyn.ensemble`). Top row: the fraction of runs that converge (L − L* ≤
1e-10) and that diverge, against η/η*. Bottom row: the sharpness of every limit reached,
against η, under the stability bound 2/η; the minimum sharpness over M is the horizontal line.

    python figures/fig3_linear_networks.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

import eosdyn
from eosdyn import plot
from eosdyn.analysis.linear_networks import linear_network_stability
from eosdyn.losses import DeepLinear, ScalarNet
from eosdyn.rules import GD

NAME = "linear-nets"
NUMBER = 3
DESCRIPTION = ("Linear networks: fraction of initialisations converging and sharpness of the limits vs η, "
               "critical step sizes marked (Crăciun & Ghoshdastidar 2024)")
FIGSIZE = (10.0, 6.0)
TOL = 1e-10


def networks():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 3))
    Y = X @ rng.standard_normal((3, 2))
    return [("scalar net, depth 2", ScalarNet(2, 1.0), 1.0),
            ("scalar net, depth 3", ScalarNet(3, 1.0), 1.0),
            ("linear net 3→3→2", DeepLinear(X, Y, [3]), 0.5)]


def compute(quick: bool, quiet: bool = False) -> dict:
    n = 64 if quick else 256
    steps = 2000 if quick else 6000
    factors = (np.array([0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.02, 1.1, 1.25]) if quick
               else np.concatenate([np.linspace(0.1, 0.9, 17), [0.93, 0.96, 0.98, 0.99], np.linspace(1.01, 1.4, 8)]))
    out = []
    for label, loss, scale in plot.progress(networks(), quiet=quiet, desc="networks"):
        st = linear_network_stability(loss, n_starts=2 if quick else 6, seed=0)
        crit = st.critical_lr
        rng = np.random.default_rng(7)
        th0 = scale * rng.standard_normal((n, loss.dim))
        frac, div, lims = [], [], []
        for f in factors:
            e = eosdyn.ensemble(loss, GD(float(f * crit)), th0, steps, record_every=steps, blowup=1e6)
            fl = e.loss[:, -1]
            conv = np.isfinite(fl) & (fl - loss.min_value <= TOL * max(1.0, abs(loss.min_value)))
            frac.append(float(conv.mean()))
            div.append(float(e.diverged.mean()))
            lims.append(e.sharpness[conv, -1].copy())
        out.append(dict(label=label, loss=loss, crit=crit, min_sharp=st.min_sharpness,
                        analytic=st.analytic_min_sharpness, lrs=factors * crit, frac=np.array(frac),
                        div=np.array(div), lims=lims))
    return dict(nets=out, factors=factors, n=n, steps=steps, quick=quick)


def draw(r):
    fig, axes = plot.new_figure(2, 3, size=FIGSIZE)
    for k, net in enumerate(r["nets"]):
        ax = axes[0, k]
        x = r["factors"]
        ax.plot(x, net["frac"], "o-", color=plot.color("gd"), ms=3, label="converged")
        ax.plot(x, net["div"], "s--", color=plot.color("diverged"), ms=3, label="diverged")
        plot.mark_threshold(ax, 1.0, label=f"η* = {net['crit']:.4g}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("η / η*")
        if k == 0:
            ax.set_ylabel("fraction of initialisations")
        ax.set_title(net["label"])
        ax.legend(fontsize=7, loc="center left")
        plot.panel_label(ax, "abc"[k])

        ax = axes[1, k]
        for eta, s in zip(net["lrs"], net["lims"]):
            ax.plot(np.full(s.shape, eta), s, ".", color=plot.color("gd"), ms=2, alpha=0.5)
        grid = np.linspace(net["lrs"][0] * 0.9, net["lrs"][-1] * 1.02, 200)
        ax.plot(grid, 2 / grid, "--", color=plot.COLORS["edge"], lw=1.0, label="2/η (stability bound)")
        ax.axhline(net["min_sharp"], color="k", lw=0.8, ls=":", label=f"min over M = {net['min_sharp']:.4g}")
        plot.mark_threshold(ax, net["crit"], color_="0.4")
        ax.set_yscale("log")
        ax.set_ylim(net["min_sharp"] * 0.5, 2 / net["lrs"][0] * 1.5)
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("step size η")
        if k == 0:
            ax.set_ylabel("sharpness of the limit λ₁")
        ax.legend(fontsize=7)
        plot.panel_label(ax, "def"[k])
    return fig


def summarize(r) -> dict:
    nets, claims = [], []
    for net in r["nets"]:
        f = r["factors"]
        above = f > 1.0
        below = f <= 0.9
        max_ratio = max((float(np.max(s * eta / 2)) for eta, s in zip(net["lrs"], net["lims"]) if s.size),
                        default=float("nan"))
        last_conv = float(f[net["frac"] > 0].max()) if np.any(net["frac"] > 0) else float("nan")
        first_zero = float(f[(f > last_conv) & (net["frac"] == 0)].min()) if np.any(
            (f > last_conv) & (net["frac"] == 0)) else float("nan")
        rec = {"network": net["label"], "critical_lr": net["crit"], "min_manifold_sharpness": net["min_sharp"],
               "analytic_min_sharpness": net["analytic"], "lrs": net["lrs"], "lr_over_critical": f,
               "fraction_converged": net["frac"], "fraction_diverged": net["div"],
               "limit_sharpness_median": [float(np.median(s)) if s.size else None for s in net["lims"]],
               "max_limit_eta_lambda_over_2": max_ratio,
               "measured_edge_bracket": [last_conv, first_zero]}
        nets.append(rec)
        name = net["label"]
        if net["analytic"] is not None:
            claims.append(plot.claim(f"{name}: η* = 2/min_M λ_max = 2/D", 2.0 / net["analytic"], net["crit"],
                                     abs(net["crit"] * net["analytic"] / 2 - 1) < 1e-4,
                                     "AM–GM at the balanced minimum", "measured: numerical minimisation over M"))
        claims.append(plot.claim(f"{name}: no initialisation converges above η*", 0.0,
                                 float(net["frac"][above].max()), bool(np.all(net["frac"][above] == 0)),
                                 "Crăciun & Ghoshdastidar 2024"))
        claims.append(plot.claim(f"{name}: a positive fraction converges below η*", "> 0",
                                 float(net["frac"][below].min()), bool(np.all(net["frac"][below] > 0)),
                                 "Crăciun & Ghoshdastidar 2024", "checked at η ≤ 0.9 η*"))
        claims.append(plot.claim(f"{name}: every limit has λ₁ ≤ 2/η", "ηλ₁/2 ≤ 1", max_ratio,
                                 bool(max_ratio <= 1 + 1e-6), "linear stability of the limit"))
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
            "n_initialisations": r["n"], "steps": r["steps"], "convergence_tol": TOL, "networks": nets,
            "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)

if __name__ == "__main__":
    main()
