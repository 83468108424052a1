r"""Figure 10 — self-stabilization: GD at the edge follows the constrained trajectory θ†.

Damian, Nichani & Lee (ICLR 2023, §4) reduce GD near the edge to two numbers, the
displacement x = u·(θ − θ†) along the top eigenvector and y = ∇S⊥·(θ − θ†) ≈ S − 2/η:

    x_{t+1} = −(1 + η y_t) x_t,     y_{t+1} = y_t + η(α − β x_t²/2),

with α = −∇L·∇S⊥ and β = ‖∇S⊥‖². The cycles average x² to δ² = 2α/β, and S to 2/η. On
the exact toy L(x, y) = ½·y·x² − g·y (S = y, α = g, β = 1) GD *is* this system, so the
prediction (started at the onset from GD's own (x, y)) must equal GD to rounding, and
the cycle means must be 2g and 2/η. The central flow (Cohen et al., ICLR 2025) of the
same run predicts σ² = 2g on the edge: the time average the cycles realise.

Panels: (a) S(θ_t) for GD, θ† and the central flow, with 2/η; (b) x_t² for GD and the
reduced prediction, with δ² = 2α/β and the whole-cycle mean; (c) the (y, x) orbit;
(d) the same on a network (:func:`eosdyn.bridge.self_stabilization`; the authors' MLP of
figure 9, GD at η = 0.1): GD's x_t² = (u·(θ_t − θ†_t))² against δ²_t = 2α_t/β_t measured along
θ†, and their means after the first crossing's transient. Full mode: steps 0–1000 from
torch's default initialisation (window 650–1000); quick mode: 250 steps from GD's step 600
(window: after the first 50). On the network the reduced system is a local model: started
from GD's tiny x at the onset it does not track GD's phase, so only δ² is compared.

    python figures/fig10_self_stabilization.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import flows, plot
from eosdyn.losses import from_sympy
from eosdyn.rules import GD

NAME = "self-stabilization"
NEEDS = ("torch",)
NUMBER = 10
DESCRIPTION = "Self-stabilization: GD at the edge is the reduced (x, y) system; x² averages 2α/β, S averages 2/η"
FIGSIZE = (13.0, 3.4)
G = 0.5
LR = 0.01


def compute(quick: bool, quiet: bool = False) -> dict:
    loss = from_sympy("y*x**2/2 - g*y", ["x", "y"], params={"g": G})
    steps = 14000 if quick else 30000
    theta0 = [0.5, 2 / LR - 1.0]
    with plot.Timer() as t:
        r = flows.self_stabilization(loss, LR, theta0, steps)
        cf = flows.central_flow(loss, GD(LR), theta0, min(steps, 600))
    xg, yg, xp, yp = (r.extra[k] for k in ("x_gd", "y_gd", "x_pred", "y_pred"))
    on = int(np.argmax(np.isfinite(xp)))
    mean_x2, cycles = flows.whole_cycle_mean(xg[on:] ** 2, yg[on:])
    mean_S, _ = flows.whole_cycle_mean(r.sharpness[on:], yg[on:])
    with plot.Timer() as t_net:
        net = _network(quick)
    return dict(net=net, wall_net=t_net.seconds, step=r.step, S=r.sharpness, S_dagger=r.extra["sharpness_dagger"],
                x_gd=xg, y_gd=yg, x_pred=xp,
                y_pred=yp, delta_sq=r.extra["delta_sq"], onset=on, mean_x2=mean_x2, cycles=cycles, mean_S=mean_S,
                cf_step=cf.step, cf_S=cf.sharpness, cf_sigma=cf.extra["sigma_sq"][:, 0],
                max_pred_err=float(np.nanmax(np.abs(xp - xg))), wall=t.seconds, quick=quick, steps=steps)


def _network(quick):
    """GD, θ† and δ² on the authors' MLP (figure 9's setup)."""
    import torch

    from eosdyn import bridge

    torch.set_num_threads(1)
    torch.manual_seed(0)
    X = torch.randn(128, 8, dtype=torch.float64)
    Y = torch.randn(128, 1, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16), torch.nn.SiLU(),
                                torch.nn.Linear(16, 1)).double()
    start, steps = (600, 250) if quick else (0, 1000)
    if start:
        head = bridge.gd_trajectory(model, torch.nn.MSELoss(), (X, Y), 0.1, start)
        torch.nn.utils.vector_to_parameters(torch.as_tensor(head.theta[-1]), model.parameters())
    r = bridge.self_stabilization(model, torch.nn.MSELoss(), (X, Y), 0.1, steps, sharpness_every=0)
    x2 = r.extra["x_gd"] ** 2
    on_edge = r.extra["sharpness_dagger"] >= (2 / 0.1) * (1 - 1e-3)   # the linearised projection holds S to ~4e-5
    d2 = np.where(on_edge, r.extra["delta_sq"], np.nan)      # δ² is defined on the edge
    lo = 50 if quick else 650
    return dict(step=r.step + start, x2=x2, delta_sq=d2, S_dagger=r.extra["sharpness_dagger"], lo=lo,
                mean_x2=float(np.nanmean(x2[lo:])), mean_delta_sq=float(np.nanmean(d2[lo:])), status=r.status)


def draw(r):
    fig, axes = plot.new_figure(1, 4, size=FIGSIZE)
    t = r["step"]
    ax = axes[0]
    ax.plot(t, r["S"], color=plot.color("gd"), lw=0.6, label="GD  S(θ_t)")
    ax.plot(t, r["S_dagger"], color="#D55E00", lw=1.2, label="θ†  S(θ†_t)")
    ax.plot(r["cf_step"], r["cf_S"], color="#009E73", lw=1.2, ls="--", label="central flow")
    ax.axhline(2 / LR, color="0.3", lw=0.7, ls=":", label="2/η")
    ax.set_xlabel("step t")
    ax.set_ylabel("sharpness S")
    ax.set_title("GD hovers at 2/η; θ† sits on it")
    ax.legend(fontsize=6, loc="lower right")
    plot.panel_label(ax, "a")

    ax = axes[1]
    ax.plot(t, r["x_gd"] ** 2, color=plot.color("gd"), lw=0.6, label="GD  x_t²")
    ax.plot(t, r["x_pred"] ** 2, color="#D55E00", lw=0.8, ls="--", label="reduced system")
    ax.axhline(2 * G, color="0.3", lw=0.7, ls=":", label="δ² = 2α/β")
    ax.axhline(r["mean_x2"], color="#009E73", lw=0.9, label=f"mean over {r['cycles']} cycles")
    ax.set_xlabel("step t")
    ax.set_ylabel("x²")
    ax.set_title("the oscillation's size")
    ax.legend(fontsize=6, loc="upper right")
    plot.panel_label(ax, "b")

    ax = axes[2]
    on = r["onset"]
    ax.plot(r["y_gd"][on:], np.abs(r["x_gd"][on:]), ".", ms=1.0, color=plot.color("gd"), label="GD")
    ax.plot(r["y_pred"][on:], np.abs(r["x_pred"][on:]), color="#D55E00", lw=0.4, label="reduced system")
    ax.set_xlabel("y ≈ S − 2/η")
    ax.set_ylabel("|x|")
    ax.set_title("the (y, x) cycles")
    ax.legend(fontsize=6)
    plot.panel_label(ax, "c")

    ax = axes[3]
    n = r["net"]
    ax.plot(n["step"], n["x2"], color=plot.color("gd"), lw=0.5, label=f"GD  x_t² (mean {n['mean_x2']:.2e})")
    ax.plot(n["step"], n["delta_sq"], color="#D55E00", lw=1.0,
            label=f"δ² = 2α/β along θ† (mean {n['mean_delta_sq']:.2e})")
    lo = n["step"][n["lo"]]
    ax.hlines([n["mean_x2"], n["mean_delta_sq"]], lo, n["step"][-1], colors=["#009E73", "0.3"], lw=1.0,
              linestyles=["-", ":"], label=None)
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1e-1)
    ax.set_xlabel("step t")
    ax.set_ylabel("x²")
    ax.set_title("an MLP: x² against δ²")
    ax.legend(fontsize=6, loc="upper left")
    plot.panel_label(ax, "d")
    return fig


def summarize(r) -> dict:
    claims = [
        plot.claim("the mean of x² over whole cycles is δ² = 2α/β", 2 * G, r["mean_x2"],
                   bool(abs(r["mean_x2"] / (2 * G) - 1) < 0.02), "Damian, Nichani & Lee, ICLR 2023, §4",
                   f"{r['cycles']} whole cycles; tolerance 2%"),
        plot.claim("the mean of S over whole cycles is 2/η", 2 / LR, r["mean_S"],
                   bool(abs(r["mean_S"] * LR / 2 - 1) < 0.01), "Damian, Nichani & Lee, ICLR 2023, §4",
                   "tolerance 1%"),
        plot.claim("on the exact toy the reduced system is GD itself", 0.0, r["max_pred_err"],
                   bool(r["max_pred_err"] < 1e-8), "L = ½yx² − gy: S = y, α = g, β = 1", "max |x_pred − x_GD|"),
        plot.claim("the central flow's σ² on the edge is 2g", 2 * G, float(r["cf_sigma"][-1]),
                   bool(abs(r["cf_sigma"][-1] / (2 * G) - 1) < 1e-6), "Cohen et al., ICLR 2025, §3"),
        plot.claim("on an MLP, GD's mean x² equals the mean of δ² = 2α/β measured along θ†",
                   r["net"]["mean_delta_sq"], r["net"]["mean_x2"],
                   bool(abs(r["net"]["mean_x2"] / r["net"]["mean_delta_sq"] - 1) < 0.10),
                   "Damian, Nichani & Lee, ICLR 2023, §4", "tolerance 10%; after the first crossing's transient"),
    ]
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full", "lr": LR, "g": G,
            "steps": r["steps"], "onset_step": r["onset"], "whole_cycles": r["cycles"],
            "mean_x_sq": r["mean_x2"], "mean_sharpness": r["mean_S"], "delta_sq": 2 * G,
            "max_prediction_error": r["max_pred_err"], "central_flow_sigma_sq": float(r["cf_sigma"][-1]),
            "mlp_mean_x_sq": r["net"]["mean_x2"], "mlp_mean_delta_sq": r["net"]["mean_delta_sq"],
            "mlp_status": r["net"]["status"], "wall_time_network_s": r["wall_net"],
            "wall_time_compute_s": r["wall"], "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)


if __name__ == "__main__":
    main()
