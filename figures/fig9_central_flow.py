r"""Figure 9 — the central flow predicts GD at the edge of stability on a small network.

Cohen, Damian, Talwalkar, Kolter & Lee (ICLR 2025) model GD's time-averaged trajectory by
the *central flow* dw/dt = −η[∇L + ½σ²∇S] with σ² = max(0, 2⟨−∇L, ∇S⟩/‖∇S‖²) on the edge
S = 2/η (one unstable direction; several through a complementarity problem), and
predict the time-averaged loss L(w) + σ²/η·(ηS/2). Gradient flow dw/dt = −η∇L ignores the
oscillation and sharpens past the edge.

Setup (the authors' own example): MLP 8→16→16→1 with swish, n = 128, x, y ~ N(0, 1), MSE,
full-batch GD at η = 0.1, float64, 4 Euler substeps per step (:func:`eosdyn.bridge.central_flow`,
:func:`eosdyn.bridge.gradient_flow`, :func:`eosdyn.bridge.gd_trajectory`). Full mode: 1000
steps from torch's default initialisation (seed 0). Quick mode: steps 650–800 of the same
GD run (past the first crossing's transient, where GD hovers at the edge), against the flows
started from GD's midpoint at step 650 (the central flow from its projection onto
{S ≤ 2/η, ∇L·u = 0}).

Panels: (a) GD's loss (raw and Gaussian-smoothed), the central flow's predicted loss and the
gradient flow's loss; (b) ηλ₁ of GD (Lanczos every 5 steps, so both phases of its period-two
oscillation show) and ηλ₁..ηλ₃ of the central
flow, ηλ₁ of gradient flow; (c) the distance from GD's midpoint (w₋ + 2w + w₊)/4 to each flow.

    python figures/fig9_central_flow.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import flows, plot
from eosdyn.sim.results import Trajectory

NAME = "central-flow"
NUMBER = 9
DESCRIPTION = "Central flow vs GD and gradient flow on an MLP at the edge: predicted loss, ηλ₁..₃, distances"
NEEDS = ("torch",)
FIGSIZE = (10.0, 3.4)
LR = 0.1


def _setup():
    import torch

    torch.manual_seed(0)
    X = torch.randn(128, 8, dtype=torch.float64)
    Y = torch.randn(128, 1, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16), torch.nn.SiLU(),
                                torch.nn.Linear(16, 1)).double()
    return model, torch.nn.MSELoss(), (X, Y)


def compute(quick: bool, quiet: bool = False) -> dict:
    import torch

    from eosdyn import bridge

    model, loss_fn, data = _setup()
    start, steps = (650, 150) if quick else (0, 1000)
    with plot.Timer() as t_gd:
        full = bridge.gd_trajectory(model, loss_fn, data, LR, start + steps, sharpness_every=5)
    # GD's own run on [start, start + steps]; the flows start from GD's midpoint at ``start``
    sl = slice(start, start + steps + 1)
    gd = Trajectory(step=full.step[sl] - start, loss=full.loss[sl], theta=full.theta[sl],
                    sharpness=full.sharpness[sl], params=full.params)
    if start:
        mid = flows.midpoint(full.theta[start - 1:start + 2])[1]
        torch.nn.utils.vector_to_parameters(torch.as_tensor(mid), model.parameters())
    with plot.Timer() as t_cf:
        cf = bridge.central_flow(model, loss_fn, data, LR, steps, project=bool(start))
    with plot.Timer() as t_gf:
        gf = bridge.gradient_flow(model, loss_fn, data, LR, steps)
    on = int(np.argmax(cf.extra["n_unstable"] > 0)) if (cf.extra["n_unstable"] > 0).any() else None
    settle = (on if quick else 650) if on is not None else steps // 2   # after the first crossing's transient
    cmp = flows.compare(gd, cf, gf, names=["central", "gradient"], window=(min(settle, steps - 1), steps - 1))
    return dict(start=start, steps=steps, step=gd.step + start, gd_loss=gd.loss,
                gd_smooth=cmp.gd_loss_smoothed, gd_sharp=gd.sharpness * LR, cf_pred=cf.extra["predicted_loss"],
                cf_loss=cf.loss, cf_eff=cf.extra["effective_sharpness"][:, :3], gf_loss=gf.loss,
                gf_eff=gf.extra["effective_sharpness"][:, 0], d_cf=cmp.distance["central"],
                d_gf=cmp.distance["gradient"], err=cmp.loss_rel_error["central"], onset=on, settle=settle,
                hvp=cf.extra["hvp_count"], n_unstable=cf.extra["n_unstable"],
                wall=dict(gd=t_gd.seconds, central=t_cf.seconds, gradient=t_gf.seconds), quick=quick)


def draw(r):
    fig, axes = plot.new_figure(1, 3, size=FIGSIZE)
    t = r["step"]
    ax = axes[0]
    ax.plot(t, r["gd_loss"], color=plot.color("gd"), lw=0.5, alpha=0.45, label="GD")
    ax.plot(t, r["gd_smooth"], color=plot.color("gd"), lw=1.2, label="GD, smoothed")
    ax.plot(t, r["cf_pred"], color="#009E73", lw=1.2, ls="--", label="central flow: predicted")
    ax.plot(t, r["gf_loss"], color="#D55E00", lw=1.0, label="gradient flow")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("training loss")
    ax.set_title("the loss GD achieves")
    ax.legend(fontsize=6, loc="lower left")
    plot.panel_label(ax, "a")

    ax = axes[1]
    ok = np.isfinite(r["gd_sharp"])
    ax.plot(t[ok], r["gd_sharp"][ok], "o", ms=2, color=plot.color("gd"), label="GD ηλ₁")
    for j in range(r["cf_eff"].shape[1]):
        ax.plot(t, r["cf_eff"][:, j], color="#009E73", lw=1.0 if j == 0 else 0.6, alpha=1.0 if j == 0 else 0.6,
                label="central flow ηλ₁..₃" if j == 0 else None)
    ax.plot(t, r["gf_eff"], color="#D55E00", lw=1.0, label="gradient flow ηλ₁")
    ax.axhline(2.0, color="0.3", lw=0.7, ls=":")
    ax.set_xlabel("step t")
    ax.set_ylabel("ηλ")
    ax.set_title("sharpness: held at 2 vs sharpening")
    ax.legend(fontsize=6, loc="upper left")
    plot.panel_label(ax, "b")

    ax = axes[2]
    ax.plot(t, r["d_cf"], color="#009E73", lw=1.0, label="‖w*_GD − w_CF‖")
    ax.plot(t, r["d_gf"], color="#D55E00", lw=1.0, label="‖w*_GD − w_GF‖")
    ax.set_xlabel("step t")
    ax.set_ylabel("distance to GD's midpoint")
    ax.set_title("which flow GD follows")
    ax.legend(fontsize=6, loc="upper left")
    plot.panel_label(ax, "c")
    return fig


def summarize(r) -> dict:
    n = r["steps"]
    err = r["err"]
    settle = r["settle"]
    ratio = float(r["d_cf"][n - 1] / r["d_gf"][n - 1])
    on = r["onset"]
    eff = r["cf_eff"][:, 0]
    held = bool(on is not None and np.all((eff[on:] >= 1.98) & (eff[on:] <= 2.02)))
    claims = [
        plot.claim("the central flow's predicted loss is within 5% of the smoothed GD loss", 0.05,
                   float(np.nanmax(err[settle:n])), bool(np.nanmax(err[settle:n]) < 0.05),
                   "Cohen et al., ICLR 2025, §3.3",
                   f"max relative error on steps {settle + r['start']}–{n - 1 + r['start']} (after the first "
                   "crossing's transient, which the flow does not describe); "
                   f"mean over all steps after onset {float(np.nanmean(err[on or 0:n])):.3g}"),
        plot.claim("GD stays closer to the central flow than to gradient flow: ‖w_GD − w_CF‖ ≤ 0.25‖w_GD − w_GF‖",
                   0.25, ratio, ratio <= 0.25, "issue 12's criterion, the authors' figure", "at the last step"),
        plot.claim("the central flow holds ηλ₁ at 2 after onset", 2.0,
                   [float(np.nanmin(eff[on:])), float(np.nanmax(eff[on:]))] if on is not None else None, held,
                   "Cohen et al., ICLR 2025, §3", "range after onset; tolerance ±0.02"),
    ]
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full", "lr": LR,
            "start_step": r["start"], "steps": n, "onset_step": (on + r["start"]) if on is not None else None,
            "distance_ratio": ratio, "loss_error_max_after_settle": float(np.nanmax(err[settle:n])),
            "loss_error_mean_after_onset": float(np.nanmean(err[on or 0:n])),
            "central_flow_eta_lambda1_range": [float(np.nanmin(eff[on or 0:])), float(np.nanmax(eff[on or 0:]))],
            "gradient_flow_eta_lambda1_final": float(r["gf_eff"][-1]),
            "median_hvps_per_step_after_onset": float(np.median(r["hvp"][(on or 0):n])),
            "max_unstable_directions": int(r["n_unstable"].max()), "wall_time_s_parts": r["wall"],
            "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize, torch_threads=1)

if __name__ == "__main__":
    main()
