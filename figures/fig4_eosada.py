r"""Figure 4 — EoS-Ada against GD, heavy-ball and Adam, on a toy loss and on a real network.

EoS-Ada (the proposal's adaptive rule, :class:`eosdyn.rules.EoSAda` /
:class:`eosdyn.bridge.EoSAda`) sets its step from the probed sharpness,

    η_t = α / (λ_max(θ_t) + ε)        (α = 1.9 by default: just inside the edge ηλ = 2),

so it rides the edge of stability by construction. The proposal claims it trains **2–3×
faster** than the standard optimizers. This figure measures that claim, and states the
measured number beside it whatever it is.

Protocol (both panels): 5 seeds (initialisations); every baseline's step size is tuned on a
grid (its best setting, by mean steps to the target, is shown — in ``--quick`` mode the real
network's baselines use one standard step size each, said so in the JSON); EoS-Ada runs at
its default α = 1.9 (toy: also the best α of a small grid). "Steps to target" is the first
step at which a run's loss is ≤ the target; the speed-up is (best baseline's mean steps) /
(EoS-Ada's mean steps). On the real network, wall-clock time to the target is measured too
(seed 0, without sharpness tracking): EoS-Ada pays ~20 Hessian-vector products per step.

* Toy: the minimalist EoS example L(x, y) = ¼(x²y² − 1)² of Zhu et al. (ICLR 2023,
  :class:`eosdyn.losses.ZhuMinimalist`), whose minima x²y² = 1 have sharpness 2(x² + y²) ≥ 4,
  from starts uniform in [0.2, 1.6]²; target L ≤ 1e-8·L(θ₀). Runs: the noise-free maps
  (:func:`eosdyn.analysis.phase.orbits`), exact sharpness.
* Real network: tanh MLP on a subset of sklearn's digits, squared loss, full batch;
  target = the worst final loss of the GD baseline over the seeds (so every GD run reaches it).
  Runs: :func:`eosdyn.bridge.train`.

Panels: (a, b) the loss, the mean ± sd of log10 L over the seeds (a geometric mean and band);
(c, d) the sharpness λ₁: the median over the seeds, the band from the 25th to the 75th percentile
(the middle three of five seeds) and every seed as a thin line (a mean ± sd band is symmetric:
one seed that settles at a much sharper minimum stretched it below zero). Toy on the left,
network on the right. The JSON's ``bands`` says so.

    python figures/fig4_eosada.py [--quick] [--out DIR]
"""
from __future__ import annotations

import warnings

import numpy as np

from eosdyn import plot
from eosdyn.losses import ZhuMinimalist
from eosdyn.plot.runs import best_of, final_loss, seed_runs, speedup, steps_to_target
from eosdyn.rules import GD, Adam, EoSAda, HeavyBall

NAME = "eosada"
NUMBER = 4
DESCRIPTION = ("EoS-Ada vs GD, heavy-ball and Adam: loss and sharpness over 5 seeds, toy loss and real net; "
               "claimed 2-3x speed-up vs measured")
NEEDS = ("torch", "eosdyn.bridge")
FIGSIZE = (10.0, 6.0)
SEEDS = 5
CLAIM = "EoS-Ada trains 2–3× faster than GD, heavy-ball and Adam"


def toy_part(quick: bool, quiet: bool) -> dict:
    loss = ZhuMinimalist()
    th0 = np.random.default_rng(1).uniform(0.2, 1.6, (SEEDS, loss.dim))
    steps = 400 if quick else 1000
    rec = 5 if quick else 10
    target = 1e-8 * np.array([loss.value(t) for t in th0])
    grids = {
        "gd": [(f"GD η={v:.3g}", GD(v))
               for v in (np.geomspace(0.05, 0.4, 4) if quick else np.geomspace(0.02, 0.5, 11))],
        "heavyball": [(f"HB η={v:.3g} β=0.9", HeavyBall(v, 0.9))
                      for v in (np.geomspace(0.01, 0.05, 3) if quick else np.geomspace(0.002, 0.1, 8))],
        "adam": [(f"Adam η={v:.3g}", Adam(v)) for v in ((0.03, 0.1) if quick else np.geomspace(0.003, 0.3, 7))],
        "eosada": [(f"EoS-Ada α={v:g}", EoSAda(alpha=v)) for v in ((1.0, 1.5, 1.9) if quick else (0.5, 1.0, 1.5, 1.9))],
    }
    out = {}
    jobs = [(fam, lab, rule) for fam, items in grids.items() for lab, rule in items]
    for fam, lab, rule in plot.progress(jobs, quiet=quiet, desc="toy runs"):
        r = seed_runs(loss, rule, th0, steps, rec)
        r["steps_to_target"] = steps_to_target(r["loss"], target)
        r["family"] = fam
        out[lab] = r
    best = {}
    for fam in grids:
        sub = {k: v for k, v in out.items() if v["family"] == fam}
        best[fam] = best_of(sub, fallback=final_loss)[0]
    default = "EoS-Ada α=1.9"
    base_best, _ = best_of({best[f]: out[best[f]] for f in ("gd", "heavyball", "adam")}, fallback=final_loss)
    return dict(runs=out, best=best, default=default, base_best=base_best, steps=steps, rec=rec,
                target_factor=1e-8, loss=loss)


def net_config(quick: bool) -> dict:
    if quick:
        return dict(n=128, hidden=(16, 16), steps=150, track_every=10,
                    grids={"gd": [0.5], "heavyball": [0.05], "adam": [0.01]}, tuned=False)
    return dict(n=1000, hidden=(64, 64), steps=1500, track_every=25,
                grids={"gd": [0.1, 0.2, 0.4], "heavyball": [0.02, 0.05, 0.1], "adam": [0.003, 0.01, 0.03]},
                tuned=True)


def _make_opt(fam, v, params):
    import torch

    from eosdyn.bridge import EoSAda as TorchEoSAda

    if fam == "gd":
        return torch.optim.SGD(params, lr=v)
    if fam == "heavyball":
        return torch.optim.SGD(params, lr=v, momentum=0.9)
    if fam == "adam":
        return torch.optim.Adam(params, lr=v)
    return TorchEoSAda(params, alpha=v)


def net_part(quick: bool, quiet: bool) -> dict:
    import torch

    from eosdyn.bridge import MLP, digits, mse_loss, train

    # numba's OpenMP threading layer (the toy part's ensembles ran before this) resets torch's
    # intra-op threads to the core count: pin them again to the 1 that figure_main set
    torch.set_num_threads(1)
    cfg = net_config(quick)
    X, Y = digits(n=cfg["n"], targets="onehot", seed=0)
    jobs = [(fam, v) for fam, vs in cfg["grids"].items() for v in vs] + [("eosada", 1.9)]
    runs = {}
    for fam, v in plot.progress(jobs, quiet=quiet, desc="network runs"):
        losses, sharps, lrs = [], [], []
        for seed in range(SEEDS):
            torch.manual_seed(seed)
            model = MLP(64, cfg["hidden"], 10, activation="tanh")
            tr = train(model, mse_loss, (X, Y), _make_opt(fam, v, model.parameters()), cfg["steps"],
                       track_every=cfg["track_every"], track_k=1, track_tol=1e-3, progress=False, seed=seed)
            losses.append(tr.loss)
            sharps.append(tr.sharpness)
            lrs.append(tr.lr)
        step = tr.step
        runs[(fam, v)] = dict(family=fam, value=v, step=step, loss=np.array(losses), sharpness=np.array(sharps),
                              lr=np.array(lrs))
    gd_best = min((k for k in runs if k[0] == "gd"), key=lambda k: np.mean(runs[k]["loss"][:, -1]))
    target = float(np.max(runs[gd_best]["loss"][:, -1]))  # every GD seed reaches it
    for r in runs.values():
        r["steps_to_target"] = steps_to_target(r["loss"], target, r["step"])
    best = {}
    for fam in ("gd", "heavyball", "adam", "eosada"):
        sub = {k: v for k, v in runs.items() if k[0] == fam}
        best[fam] = best_of(sub, fallback=final_loss)[0]
    # wall-clock to target: seed 0, no tracking (the optimizer's own probes included)
    wall = {}
    for fam in ("gd", "heavyball", "adam", "eosada"):
        k = best[fam]
        torch.manual_seed(0)
        model = MLP(64, cfg["hidden"], 10, activation="tanh")
        tr = train(model, mse_loss, (X, Y), _make_opt(fam, k[1], model.parameters()), cfg["steps"],
                   track_every=None, progress=False)
        t_cum = np.asarray(tr.extra["time_train"]) + np.asarray(tr.extra["time_curvature"])
        hit = np.flatnonzero(tr.loss <= target)
        wall[fam] = {"time_to_target_s": float(t_cum[hit[0]]) if hit.size else float("inf"),
                     "time_per_step_s": float(t_cum[-1] / max(cfg["steps"], 1)),
                     "hvp_per_step": float(np.asarray(tr.extra["hvp_optimizer"])[-1] / max(cfg["steps"], 1))}
    return dict(cfg=cfg, runs=runs, best=best, target=target, wall=wall)


def compute(quick: bool, quiet: bool = False) -> dict:
    return dict(toy=toy_part(quick, quiet), net=net_part(quick, quiet), quick=quick)


#: The sharpness panels' band: the 25th to 75th percentile over the seeds (the middle three of five),
#: around the median, with every seed drawn thin. A mean ± sd band is symmetric: where one seed settles
#: at a much sharper minimum it stretched below zero and hid the other curves.
SHARPNESS_BAND = (25, 75)


def _quantile_band(ax, x, Y, *, color, label, alpha=0.22, **kw):
    """The median over seeds (rows of ``Y``), a shaded SHARPNESS_BAND percentile band and each seed as
    a thin line (NaN-aware: a diverged seed drops out)."""
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (every seed diverged) stay NaN
        lo, mid, hi = np.nanpercentile(Y, [SHARPNESS_BAND[0], 50, SHARPNESS_BAND[1]], axis=0)
    for y in Y:
        ax.plot(x, y, color=color, lw=0.4, alpha=0.45)
    (line,) = ax.plot(x, mid, color=color, label=label, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, lw=0)


FAM_LABEL = {"gd": "GD", "heavyball": "heavy-ball (β=0.9)", "adam": "Adam", "eosada": "EoS-Ada (α=1.9)"}


def draw(r):
    fig, axes = plot.new_figure(2, 2, size=FIGSIZE, sharex="col")
    toy, net = r["toy"], r["net"]
    shown = [("gd", toy["best"]["gd"]), ("heavyball", toy["best"]["heavyball"]), ("adam", toy["best"]["adam"]),
             ("eosada", toy["default"])]
    for fam, lab in shown:
        run = toy["runs"][lab]
        c = plot.color(fam)
        plot.seed_band(axes[0, 0], run["step"], run["loss"], color=c, label=lab, log=True)
        _quantile_band(axes[1, 0], run["sharp_step"], run["sharpness"], color=c, label=lab)
    if toy["best"]["eosada"] != toy["default"]:
        run = toy["runs"][toy["best"]["eosada"]]
        plot.seed_band(axes[0, 0], run["step"], run["loss"], color=plot.color("eosada"), ls=":",
                       label=toy["best"]["eosada"] + " (best α)", log=True)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel(f"loss (geometric mean ± sd, {SEEDS} seeds)")
    axes[0, 0].set_title("toy: ¼(x²y² − 1)² (Zhu et al.), tuned baselines")
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].set_xlabel("step")
    axes[1, 0].set_ylabel(f"sharpness λ₁ (median, {SHARPNESS_BAND[0]}–{SHARPNESS_BAND[1]}% band)")
    plot.panel_label(axes[0, 0], "a")
    plot.panel_label(axes[1, 0], "c")

    for fam in ("gd", "heavyball", "adam", "eosada"):
        k = net["best"][fam]
        run = net["runs"][k]
        c = plot.color(fam)
        lab = FAM_LABEL[fam] + ("" if fam == "eosada" else f", η={k[1]:g}")
        plot.seed_band(axes[0, 1], run["step"], run["loss"], color=c, label=lab, log=True)
        ok = np.all(np.isfinite(run["sharpness"]), axis=0)
        _quantile_band(axes[1, 1], run["step"][ok], run["sharpness"][:, ok], color=c, label=lab)
    axes[0, 1].axhline(net["target"], color="0.5", lw=0.6, ls=":", label="target (GD's worst final loss)")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_title(f"tanh MLP on {net['cfg']['n']} digits, full batch")
    axes[0, 1].legend(fontsize=6)
    gd_lr = net["best"]["gd"][1]
    plot.edge_line(axes[1, 1], gd_lr, label=f"2/η of GD = {2 / gd_lr:.3g}", lw=0.8)
    axes[1, 1].set_xlabel("step")
    axes[1, 1].legend(fontsize=6)
    plot.panel_label(axes[0, 1], "b")
    plot.panel_label(axes[1, 1], "d")
    return fig


def summarize(r) -> dict:
    toy, net = r["toy"], r["net"]
    toy_table = {lab: {"family": run["family"], "steps_to_target_mean": float(np.mean(run["steps_to_target"])),
                       "steps_to_target": run["steps_to_target"],
                       "final_loss_mean": float(np.nanmean(run["loss"][:, -1]))}
                 for lab, run in toy["runs"].items()}
    base_steps = toy["runs"][toy["base_best"]]["steps_to_target"]
    sp_default = speedup(base_steps, toy["runs"][toy["default"]]["steps_to_target"])
    sp_best = speedup(base_steps, toy["runs"][toy["best"]["eosada"]]["steps_to_target"])
    net_table = {f"{k[0]} {k[1]:g}": {"steps_to_target": v["steps_to_target"],
                                      "steps_to_target_mean": float(np.mean(v["steps_to_target"])),
                                      "final_loss_mean": float(np.mean(v["loss"][:, -1]))}
                 for k, v in net["runs"].items()}
    eos = net["runs"][net["best"]["eosada"]]["steps_to_target"]
    per_base = {fam: speedup(net["runs"][net["best"][fam]]["steps_to_target"], eos)
                for fam in ("gd", "heavyball", "adam")}
    fastest = min(("gd", "heavyball", "adam"), key=lambda f: np.mean(net["runs"][net["best"][f]]["steps_to_target"]))
    sp_net = per_base[fastest]
    w = net["wall"]
    fastest_wall = min(("gd", "heavyball", "adam"), key=lambda f: w[f]["time_to_target_s"])
    sp_wall = (w[fastest_wall]["time_to_target_s"] / w["eosada"]["time_to_target_s"]
               if np.isfinite(w["eosada"]["time_to_target_s"]) else 0.0)
    tuned = "baselines tuned on a step-size grid" if net["cfg"]["tuned"] else \
        "quick mode: baselines at one standard step size each (not tuned)"
    claims = [
        plot.claim(CLAIM + " (toy, steps to target, α = 1.9)", "2–3×", sp_default, sp_default >= 2.0,
                   "EoS proposal", f"best tuned baseline: {toy['base_best']}"),
        plot.claim(CLAIM + " (toy, steps to target, best α)", "2–3×", sp_best, sp_best >= 2.0,
                   "EoS proposal", f"best α: {toy['best']['eosada']}"),
        plot.claim(CLAIM + " (network, steps to target)", "2–3×", sp_net, sp_net >= 2.0, "EoS proposal",
                   f"against the fastest baseline ({fastest}); {tuned}"),
        plot.claim(CLAIM + " (network, wall-clock to target)", "2–3×", sp_wall, sp_wall >= 2.0, "EoS proposal",
                   f"seed 0, no tracking; against {fastest_wall}; EoS-Ada uses "
                   f"{w['eosada']['hvp_per_step']:.1f} HVPs per step"),
    ]
    bands = {"loss": "mean ± sd of log10(loss) over the seeds (geometric mean and band)",
             "sharpness": f"median over the seeds, band from the {SHARPNESS_BAND[0]}th to the "
                          f"{SHARPNESS_BAND[1]}th percentile over the {SEEDS} seeds, every seed drawn thin"}
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full", "seeds": SEEDS,
            "bands": bands,
            "toy": {"loss": "ZhuMinimalist: (x**2*y**2 - 1)**2/4", "init": "uniform [0.2, 1.6]^2",
                    "steps": toy["steps"],
                    "target": "L ≤ 1e-8·L(θ₀) per seed", "runs": toy_table, "best": toy["best"],
                    "best_baseline": toy["base_best"], "speedup_default_alpha": sp_default,
                    "speedup_best_alpha": sp_best},
            "network": {"config": {k: v for k, v in net["cfg"].items() if k != "grids"},
                        "grids": net["cfg"]["grids"], "target_loss": net["target"], "runs": net_table,
                        "best": {f: f"{k[0]} {k[1]:g}" for f, k in net["best"].items()},
                        "speedup_steps_vs_each_baseline": per_base, "speedup_steps": sp_net,
                        "wall_clock": w, "speedup_wall_clock": sp_wall},
            "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize, torch_threads=1)

if __name__ == "__main__":
    main()
