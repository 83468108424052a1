r"""Figure 1 — the sharpness of full-batch GD on a real network rises to 2/η and hovers there.

Cohen, Kaur, Li, Kolter & Talwalkar, "Gradient descent on neural networks typically occurs
at the edge of stability" (ICLR 2021): with step size η, full-batch GD first increases the
sharpness λ₁ (the top eigenvalue of the training-loss Hessian; "progressive sharpening")
until λ₁ ≈ 2/η, then keeps training at that value — the *edge of stability* — while the
training loss keeps falling, non-monotonically, over long time scales (their Figs. 1–2).

Setup (as in Cohen et al.'s fully connected experiments, scaled down to run offline on a
CPU): a tanh MLP trained with the squared loss ½·Σ_outputs·mean_examples on a subset of
scikit-learn's digits (one-hot targets), full-batch GD (``torch.optim.SGD`` on the whole set)
at three or more step sizes from the same initialisation. λ₁ is tracked every few steps by
warm-started Lanczos on exact full-data-set Hessian-vector products
(:func:`eosdyn.bridge.train`).

Panels: (a) λ₁ against the step, with 2/η drawn for each η; (b) the training loss beneath.
The JSON records, per η, the plateau (median λ₁ over the last 40% of the run) against
2/η, the step at which λ₁ first reaches 95% of 2/η, and the loss's start, end and number of
increases.

    python figures/fig1_sharpness_network.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import plot

NAME = "sharpness-net"
NUMBER = 1
DESCRIPTION = ("GD's sharpness on a real network rises to 2/η and hovers there, at 4 step sizes (3 with --quick) "
               "(Cohen et al. 2021)")
NEEDS = ("torch", "eosdyn.bridge")
FIGSIZE = (8.0, 6.0)


def config(quick: bool) -> dict:
    if quick:
        return dict(n=256, hidden=(32, 32), lrs=(0.5, 0.4, 1 / 3), steps=600, track_every=5, seed=0)
    return dict(n=1000, hidden=(64, 64), lrs=(0.4, 0.3, 0.2, 0.15), steps=5000, track_every=10, seed=0)


def compute(quick: bool, quiet: bool = False) -> dict:
    import torch

    from eosdyn.bridge import MLP, digits, mse_loss, train

    cfg = config(quick)
    X, Y = digits(n=cfg["n"], targets="onehot", seed=cfg["seed"])
    runs = []
    for lr in plot.progress(cfg["lrs"], quiet=quiet, desc="step sizes"):
        torch.manual_seed(cfg["seed"])
        model = MLP(64, cfg["hidden"], 10, activation="tanh")
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        with plot.Timer() as t:
            tr = train(model, mse_loss, (X, Y), opt, cfg["steps"], track_every=cfg["track_every"], track_k=1,
                       track_tol=1e-3, progress=False, seed=cfg["seed"])
        runs.append(dict(lr=lr, step=tr.step, loss=tr.loss, sharpness=tr.sharpness,
                         accuracy=tr.extra.get("accuracy"), diverged=tr.diverged, wall=t.seconds,
                         hvps=float(tr.extra["hvp_tracking"][-1]) if "hvp_tracking" in tr.extra else None))
    return dict(cfg=cfg, runs=runs, quick=quick)


def _stats(run, track_every):
    tracked = np.isfinite(run["sharpness"])
    steps = run["step"][tracked]
    sh = run["sharpness"][tracked]
    edge = 2.0 / run["lr"]
    k = len(sh)
    plateau = float(np.median(sh[int(0.6 * k):]))
    reach = np.flatnonzero(sh >= 0.95 * edge)
    loss = run["loss"]
    dl = np.diff(loss)
    first_reach = int(steps[reach[0]]) if reach.size else None
    after = slice(first_reach, None) if first_reach is not None else slice(len(loss), None)
    return {"lr": run["lr"], "edge_2_over_lr": edge, "sharpness_initial": float(sh[0]),
            "sharpness_plateau": plateau, "plateau_over_edge": plateau / edge,
            "plateau_spread_p10_p90": [float(np.percentile(sh[int(0.6 * k):], 10)),
                                       float(np.percentile(sh[int(0.6 * k):], 90))],
            "first_step_at_95pct_edge": first_reach, "loss_initial": float(loss[0]), "loss_final": float(loss[-1]),
            "loss_increases": int((dl > 0).sum()),
            "loss_increases_after_edge": int((np.diff(loss[after]) > 0).sum()),
            "diverged": bool(run["diverged"]), "wall_time_s": run["wall"], "hvps_tracking": run["hvps"]}


def draw(r):
    fig, (ax, bx) = plot.new_figure(2, 1, size=FIGSIZE, sharex=True)
    for i, run in enumerate(r["runs"]):
        c = plot.color("lr", i)
        ok = np.isfinite(run["sharpness"])
        ax.plot(run["step"][ok], run["sharpness"][ok], color=c, lw=1.0, label=f"η = {run['lr']:.3g}")
        plot.edge_line(ax, run["lr"], color_=c, label=None, lw=0.8)
        bx.plot(run["step"], run["loss"], color=c, lw=0.8)
    ax.plot([], [], "k--", lw=0.8, label="2/η (dashed, same colour)")
    ax.set_ylabel("sharpness λ₁ of the training loss")
    cfg = r["cfg"]
    ax.set_title(f"full-batch GD, tanh MLP {cfg['hidden']} on {cfg['n']} digits, squared loss")
    # one legend for both panels, in a row above them: inside panel (a) it covered the curve that
    # hovers at its edge, and panel (b) repeated it
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncol=len(r["runs"]) + 1,
               fontsize=8, handlelength=1.8, columnspacing=1.4, frameon=False)
    plot.panel_label(ax, "a")
    bx.set_yscale("log")
    bx.set_xlabel("step")
    bx.set_ylabel("training loss")
    plot.panel_label(bx, "b")
    return fig


def summarize(r) -> dict:
    cfg = r["cfg"]
    stats = [_stats(run, cfg["track_every"]) for run in r["runs"]]
    claims = []
    for s in stats:
        claims.append(plot.claim(f"η = {s['lr']:.3g}: λ₁ rises to 2/η and hovers there", s["edge_2_over_lr"],
                                 s["sharpness_plateau"],
                                 s["sharpness_initial"] < s["edge_2_over_lr"] and abs(s["plateau_over_edge"] - 1) < 0.1,
                                 "Cohen et al. 2021, Fig. 1", "plateau = median λ₁ over the last 40% of the run; "
                                 "tolerance 10%"))
        claims.append(plot.claim(f"η = {s['lr']:.3g}: the loss keeps falling, non-monotonically",
                                 "falls, with increases", {"initial": s["loss_initial"], "final": s["loss_final"],
                                                           "increases_after_edge": s["loss_increases_after_edge"]},
                                 s["loss_final"] < 0.2 * s["loss_initial"] and s["loss_increases_after_edge"] > 0,
                                 "Cohen et al. 2021"))
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
            "data": f"sklearn digits, n = {cfg['n']}, one-hot targets, standardised",
            "model": f"MLP 64-{'-'.join(map(str, cfg['hidden']))}-10, tanh", "loss": "0.5*sum_outputs mean_examples",
            "steps": cfg["steps"], "track_every": cfg["track_every"], "runs": stats, "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize, torch_threads=1)

if __name__ == "__main__":
    main()
