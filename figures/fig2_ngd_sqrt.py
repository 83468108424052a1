r"""Figure 2 — normalized GD and GD on √(L − L*) drift along a manifold of minima to flatter ones.

Arora, Li & Panigrahi, "Understanding gradient descent on the edge of stability in deep
learning" (ICML 2022), study two rules on a loss L whose minima form a manifold of varying
sharpness: normalized GD, θ ← θ − η∇L/‖∇L‖, and GD on √(L − L*), whose step on L is
θ ← θ − η_eff ∇L with the effective step size η_eff = η/(2√(L − L*)). Both reach the
edge of stability — the effective step size times the sharpness, η_eff·λ₁(∇²L), is driven
to 2 — and then, oscillating across the manifold, drift *along* it in the direction that
decreases λ₁ (their Theorems 4.4 and 5.3: the iterate tracks a sharpness-reduction flow).

Loss: the depth-2 scalar network L(x, y) = ½(xy − 1)² (:class:`eosdyn.losses.ScalarNet`),
whose minima are the hyperbola xy = 1 with sharpness λ₁ = x² + y²; the flattest minimum is
(1, 1) with λ₁ = 2. Both rules start at (4, 0.3), next to the sharp minimum (4, ¼)
(λ₁ ≈ 16), with the same η.

Panels: (a) the trajectories in the plane, over the level sets of x² + y²; (b) λ₁(∇²L)
against the step; (c) η_eff·λ₁ for GD on √L (running median) against the edge value 2;
(d) the loss L against the step.

    python figures/fig2_ngd_sqrt.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import plot
from eosdyn.analysis.phase import orbits
from eosdyn.losses import ScalarNet, SqrtLoss
from eosdyn.rules import GD, NormalizedGD

NAME = "ngd-sqrt"
NUMBER = 2
DESCRIPTION = ("Normalized GD and GD on √(L−L*) enter the EoS, then drift along the minima to lower sharpness "
               "(Arora, Li & Panigrahi 2022)")
FIGSIZE = (8.0, 6.4)
START = np.array([4.0, 0.3])
LR = 0.05
MIN_SHARPNESS = 2.0  # at the balanced minimum (1, 1): D·|y|^{2(D−1)/D} with D = 2, y = 1


def _running_median(x, w):
    n = len(x)
    out = np.full(n, np.nan)
    for i in range(0, n):
        lo = max(0, i - w // 2)
        out[i] = np.median(x[lo:lo + w])
    return out


def compute(quick: bool, quiet: bool = False) -> dict:
    base = ScalarNet(2, 1.0)
    sq = SqrtLoss(base)
    steps = 8000 if quick else 40000
    runs = {}
    for key, loss, rule in plot.progress([("ngd", base, NormalizedGD(LR)), ("sqrt-gd", sq, GD(LR))],
                                         quiet=quiet, desc="runs"):
        path = orbits(loss, rule, START[None, :], steps)[0]
        lam = np.array([np.linalg.eigvalsh(base.hess(p))[-1] for p in path])
        Lv = np.array([base.value(p) for p in path])
        gn = np.array([np.linalg.norm(base.grad(p)) for p in path])
        with np.errstate(divide="ignore"):
            eff = LR / gn if key == "ngd" else LR / (2.0 * np.sqrt(Lv))
        runs[key] = dict(path=path, lam=lam, loss=Lv, eff_sharp=eff * lam)
    return dict(runs=runs, steps=steps, quick=quick)


def draw(r):
    fig, axes = plot.new_figure(2, 2, size=FIGSIZE)
    cols = {"ngd": plot.color("ngd"), "sqrt-gd": plot.color("sqrt-gd")}
    labels = {"ngd": "normalized GD on L", "sqrt-gd": "GD on √L"}
    ax = axes[0, 0]
    xs = np.linspace(0.2, 4.5, 300)
    X, Y = np.meshgrid(xs, np.linspace(0.05, 2.0, 300))
    cs = ax.contour(X, Y, X ** 2 + Y ** 2, levels=[2, 4, 8, 12, 16], colors="0.8", linewidths=0.6)
    ax.clabel(cs, fmt="λ=%g", fontsize=6)
    h = np.linspace(0.5, 4.5, 200)
    ax.plot(h, 1 / h, color="k", lw=1.0, label="minima xy = 1")
    for key, run in r["runs"].items():
        p = run["path"]
        ax.plot(p[:, 0], p[:, 1], lw=0.5, color=cols[key], label=labels[key], alpha=0.8)
    ax.plot(*START, "ko", ms=4)
    ax.plot(1, 1, "k*", ms=8, label="flattest minimum (λ₁ = 2)")
    ax.set_xlim(0.2, 4.5)
    ax.set_ylim(0.05, 2.0)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"trajectories, η = {LR}")
    ax.legend(fontsize=7, loc="upper right")
    plot.panel_label(ax, "a")

    t = np.arange(r["steps"] + 1)
    ax = axes[0, 1]
    for key, run in r["runs"].items():
        ax.plot(t + 1, run["lam"], color=cols[key], lw=0.8, label=labels[key])
    ax.axhline(MIN_SHARPNESS, color="k", ls=":", lw=0.8, label="min over the manifold = 2")
    ax.set_xscale("log")
    ax.set_xlabel("step + 1")
    ax.set_ylabel("λ₁(∇²L)")
    ax.set_title("sharpness decreases along the manifold")
    ax.legend(fontsize=7)
    plot.panel_label(ax, "b")

    ax = axes[1, 0]
    run = r["runs"]["sqrt-gd"]
    ax.plot(t + 1, run["eff_sharp"], color=cols["sqrt-gd"], lw=0.3, alpha=0.35)
    ax.plot(t + 1, _running_median(run["eff_sharp"], 100), color="k", lw=1.0,
            label="η_eff·λ₁, running median (100 steps)")
    ax.axhline(2.0, color=plot.COLORS["edge"], ls="--", lw=1.0, label="edge: η_eff·λ₁ = 2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.3, 50)
    ax.set_xlabel("step + 1")
    ax.set_ylabel("η_eff · λ₁,   η_eff = η/(2√L)")
    ax.set_title("GD on √L sits at the edge")
    ax.legend(fontsize=7)
    plot.panel_label(ax, "c")

    ax = axes[1, 1]
    for key, run in r["runs"].items():
        ax.plot(t + 1, np.maximum(run["loss"], 1e-18), color=cols[key], lw=0.4, alpha=0.6, label=labels[key])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step + 1")
    ax.set_ylabel("L = ½(xy − 1)²")
    ax.set_title("loss: oscillates, does not vanish")
    ax.legend(fontsize=7)
    plot.panel_label(ax, "d")
    return fig


def summarize(r) -> dict:
    steps = r["steps"]
    tail = slice(int(0.75 * steps), None)
    out = {}
    for key, run in r["runs"].items():
        lam = run["lam"]
        # λ₁ averaged over windows of 5% of the run: should decrease until it reaches the flat end
        w = max(1, steps // 20)
        win = np.array([lam[i:i + w].mean() for i in range(0, steps - w + 1, w)])
        out[key] = {"lambda1_start": lam[0], "lambda1_end_mean": float(lam[tail].mean()),
                    "lambda1_windows": win, "final_theta": run["path"][-1],
                    "loss_end_mean": float(run["loss"][tail].mean())}
    eff = r["runs"]["sqrt-gd"]["eff_sharp"]
    eos_phase = slice(int(0.1 * steps), None)
    med = float(np.median(eff[eos_phase]))
    out["sqrt-gd"]["eff_sharpness_median_after_10pct"] = med
    claims = []
    for key in ("ngd", "sqrt-gd"):
        v = out[key]["lambda1_end_mean"]
        claims.append(plot.claim(f"{key}: λ₁ drifts down to the flattest minimum (λ₁ = 2)", MIN_SHARPNESS, v,
                                 abs(v / MIN_SHARPNESS - 1) < 0.1, "Arora, Li & Panigrahi 2022, Thm 4.4/5.3",
                                 f"mean of λ₁ over the last quarter of {steps} steps; start λ₁ = "
                                 f"{out[key]['lambda1_start']:.2f}; tolerance 10%"))
    claims.append(plot.claim("GD on √L operates at the edge: η_eff·λ₁ ≈ 2", 2.0, med, abs(med / 2 - 1) < 0.05,
                             "Arora, Li & Panigrahi 2022, §5", "median over steps after the first 10%"))
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
            "loss": "0.5*(x*y - 1)**2", "start": START, "lr": LR, "steps": steps,
            "min_manifold_sharpness": MIN_SHARPNESS, "runs": out, "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)

if __name__ == "__main__":
    main()
