r"""Figure 11 — the Edge of Stochastic Stability: SGD's batch sharpness against 2/η.

Andreyev & Beneventano, "Edge of Stochastic Stability" (arXiv 2412.20553): under SGD with a
constant step size η it is not the full-batch sharpness λ_max that settles at 2/η, as in
full-batch GD (Cohen et al. 2021), but the *batch sharpness*

    BS(θ) = E_B[ g_Bᵀ H_B g_B / ‖g_B‖² ],

g_B and H_B the gradient and Hessian of the loss of a batch B of b examples; λ_max stays below
2/η and rises with b. Measured here with :func:`eosdyn.bridge.train` (``track_batch_sharpness=b``:
:func:`eosdyn.bridge.batch_sharpness` every ``track_every`` steps, one HVP per fresh batch until
the relative standard error reaches its target; λ_max by warm-started Lanczos on the whole
training set).

Network panels: plain SGD (``torch.optim.SGD``, no momentum, constant η = 0.8, no warm-up) on a
ReLU MLP 64-512-512-10 with the paper's scaled-down initialisation (Kaiming-normal fan-in weights
×0.2, zero biases: :func:`init_small`), squared loss ½·Σ_outputs·mean_examples, on all 1797 of
scikit-learn's digits (standardised, one-hot targets), batches of b distinct examples drawn
uniformly at every step, from the same initialisation for every b; float32.
(a) BS·η/2 and (b) λ_max·η/2 over the steps (1 = the edge 2/η); (c) their medians *after onset*
against b. The onset is the first record after step 0 where BS·η/2 ≥ 0.9 (``onset_level``);
"after onset" is the records strictly after it (the onset record is left out so that the
threshold does not pick the window's first value) up to the end of the run. The medians over
the second half of the run are also written to the JSON.

Why this setup (log of the search: the issue's notes). The earlier one — tanh 64-32-32-10 at
PyTorch's default initialisation, 1000 digits, η = 0.6 — started *above* the edge (λ_max·η/2 ≈ 1.07
at step 0, a catapult) and its batch sharpness then crept up from below (BS·η/2 ≈ 0.82–0.90 after
6000 steps), below λ_max for b ≥ 32; tanh 256-256 at a small initialisation did the same
(BS·η/2 ≈ 0.56 at η = 0.3, b = 8). With the paper's own recipe (ReLU MLP of width 512,
initialisation ×0.2, MSE, constant η, train towards interpolation) the batch sharpness rises to
2/η and stays there, while λ_max stays below and rises with b. At η = 0.5 b = 32 sagged to
BS·η/2 ≈ 0.84 once the loss reached ~2e-5 (interpolation: the gradient noise that holds SGD at the
edge vanishes); η = 0.8 reaches the edge sooner and held it at b = 8 and 32 over 10 000 steps.
At b = 8 the first few hundred steps go through a catapult (λ_max·η/2 ≈ 1.5 around step 500),
after which both settle.

The ``--quick`` mode (CI-sized: a 64-32-32-10 net on 400 digits for 500 steps) only exercises the
pipeline: it is too short and too small to show the claim, and its claims are stated as measured.

Toy panel (d): a realisable least-squares problem L = (1/2n) Σᵢ (xᵢᵀθ − yᵢ)², n examples, on
which SGD's error e = θ − θ* evolves by e ← (I − ηH_B) e. The exact mean-square threshold η*
(ρ(E[(I − ηH_B) ⊗ (I − ηH_B)]) = 1, Mulayoff & Michaeli 2024: :func:`eosdyn.analysis.sgd_threshold`)
against the threshold measured by simulating the numba SGD rule (:class:`eosdyn.rules.SGD` through
:func:`eosdyn.ensemble`) for b = 1 … n, bisecting η on the sign of a growth rate:

- **mean square (primary)**: the ensemble's second moment M_t = E[e_t e_tᵀ], propagated step by step:
  K errors are drawn afresh from N(0, M̂_t), moved one SGD step by the rule, and
  M̂_{t+1} = (1/K) Σ e e ᵀ. Because the batch B_t is independent of e_t and the step is linear in e,
  E[e_{t+1}e_{t+1}ᵀ] depends on the law of e_t only through M_t, so this is an unbiased power
  iteration of the true second-moment map; the fresh draws keep the sample mean free of the heavy
  tails that make the plain ensemble mean of ‖e_T‖² (one long run per member) miss the rare
  exploding paths and overshoot η* at small b. The growth rate is the mean of log(tr M̂_{t+1}/tr M̂_t)
  over the steps after a burn-in.
- **typical trajectory (context)**: the median over the ensemble of (1/T) log(‖e_T‖/‖e_0‖) for
  one long run per member. Its zero is the almost-sure (top Lyapunov exponent) threshold, which is
  *above* the mean-square one (Jensen: E log ≤ log E), so it is reported, not compared with η*.

    python figures/fig11_edge_of_stochastic_stability.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import plot

NAME = "edge-of-stochastic-stability"
NUMBER = 11
DESCRIPTION = ("Edge of Stochastic Stability: SGD's batch sharpness vs 2/η, λ_max below it and rising with the batch "
               "size; SGD's mean-square threshold, simulated vs exact (Andreyev & Beneventano 2024)")
NEEDS = ("torch",)
FIGSIZE = (11.0, 7.5)


def config(quick: bool) -> dict:
    if quick:
        net = dict(n=400, hidden=(32, 32), activation="relu", init_scale=0.2, lr=0.8, batch_sizes=(8, 32, 128),
                   steps=500, track_every=50, bs_options=dict(rel_std_error=0.05, min_batches=10, max_batches=40),
                   onset_level=0.9, seed=0)
        toy = dict(n=5, d=3, ensemble=1000, moment_steps=16, burn=6, lyap_steps=100, bisections=8, seed=0)
    else:
        net = dict(n=None, hidden=(512, 512), activation="relu", init_scale=0.2, lr=0.8, batch_sizes=(8, 32, 128),
                   steps=8000, track_every=500, bs_options=dict(rel_std_error=0.05, min_batches=10, max_batches=200),
                   onset_level=0.9, seed=0)
        toy = dict(n=8, d=3, ensemble=6000, moment_steps=40, burn=10, lyap_steps=400, bisections=16, seed=0)
    return dict(net=net, toy=toy)


def init_small(model, scale):
    """Kaiming-normal (fan-in, ReLU gain) weights times ``scale``, zero biases: the scaled-down
    initialisation of Andreyev & Beneventano's MLP runs (init scale 0.2), so that training starts
    well below the edge and progressive sharpening, not a catapult from an over-sharp start,
    brings the batch sharpness up to 2/η."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                m.weight.mul_(scale)
                torch.nn.init.zeros_(m.bias)
    return model


class RandomBatches:
    """An endless stream of batches of ``b`` distinct examples of (X, Y), drawn uniformly and
    independently at every step (torch generator seeded with ``seed``)."""

    def __init__(self, X, Y, b, seed):
        self.X, self.Y, self.b, self.seed = X, Y, b, seed

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed)
        n = self.X.shape[0]
        while True:
            idx = torch.randperm(n, generator=g)[: self.b]
            yield self.X[idx], self.Y[idx]


# ----------------------------------------------------------------------------- the network
def compute_net(cfg, quiet):
    import warnings

    import torch

    from eosdyn.bridge import MLP, digits, mse_loss, train

    X, Y = digits(n=cfg["n"], targets="onehot", seed=cfg["seed"])
    runs = []
    for b in plot.progress(cfg["batch_sizes"], quiet=quiet, desc="batch sizes"):
        torch.manual_seed(cfg["seed"])
        model = init_small(MLP(64, cfg["hidden"], 10, activation=cfg["activation"]), cfg["init_scale"])
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
        with plot.Timer() as t, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            tr = train(model, mse_loss, RandomBatches(X, Y, b, cfg["seed"] + 1), opt, cfg["steps"],
                       track_every=cfg["track_every"], track_k=1, track_tol=1e-3, track_data=(X, Y), progress=False,
                       seed=cfg["seed"], track_batch_sharpness=b, batch_sharpness_options=cfg["bs_options"])
        ok = np.isfinite(tr.sharpness)
        runs.append(dict(b=b, step=tr.step[ok], bs=tr.extra["batch_sharpness"][ok],
                         bs_lo=tr.extra["batch_sharpness_lo"][ok], bs_hi=tr.extra["batch_sharpness_hi"][ok],
                         bs_hvp=tr.extra["batch_sharpness_hvp"][ok], lam=tr.sharpness[ok], loss=tr.loss,
                         diverged=tr.diverged, diverged_at=tr.diverged_at, wall=t.seconds,
                         bs_target_missed=sum("max_batches" in str(w.message) for w in caught)))
    return runs


# ----------------------------------------------------------------------------- the toy
def toy_problem(cfg):
    from eosdyn.losses import LeastSquares

    rng = np.random.default_rng(cfg["seed"])
    X = rng.standard_normal((cfg["n"], cfg["d"])) * np.linspace(1.0, 0.5, cfg["d"])
    return LeastSquares(X, X @ rng.standard_normal(cfg["d"]))   # realisable: y = Xθ*, L* = 0


def moment_growth(ls, lr, b, cfg, seed):
    """Mean log growth per step of tr M̂_t, the ensemble's second moment with fresh Gaussian draws (docstring)."""
    import eosdyn
    from eosdyn.rules import SGD

    rng = np.random.default_rng([seed, 1])
    d, K = ls.dim, cfg["ensemble"]
    M = np.eye(d)
    logs = []
    for t in range(cfg["moment_steps"]):
        w, V = np.linalg.eigh(0.5 * (M + M.T))
        L = V * np.sqrt(np.clip(w, 0.0, None))     # M = L Lᵀ (M may be near rank one: no Cholesky)
        e0 = rng.standard_normal((K, d)) @ L.T
        res = eosdyn.ensemble(ls, SGD(lr, b), ls.minimizer + e0, 1, record_every=1, seed=seed * 100_003 + t,
                              track_sharpness=False, blowup=1e300)
        e1 = res.final_theta - ls.minimizer
        M1 = e1.T @ e1 / K
        g = np.trace(M1) / np.trace(M)
        logs.append(np.log(g))
        M = M1 / np.trace(M1)                # renormalised: only the growth is kept
    return float(np.mean(logs[cfg["burn"]:]))


def lyapunov_median(ls, lr, b, cfg, seed):
    """Median over the ensemble of (1/T) log(‖e_T‖/‖e_0‖), one run of T steps per member."""
    import eosdyn
    from eosdyn.rules import SGD

    rng = np.random.default_rng([seed, 2])
    e0 = 1e-3 * rng.standard_normal((cfg["ensemble"], ls.dim))
    T = cfg["lyap_steps"]
    res = eosdyn.ensemble(ls, SGD(lr, b), ls.minimizer + e0, T, record_every=T, seed=seed, track_sharpness=False,
                          blowup=1e300)
    e = res.final_theta - ls.minimizer
    with np.errstate(over="ignore"):             # exploding members: an infinite rate
        rate = (np.log(np.linalg.norm(e, axis=1)) - np.log(np.linalg.norm(e0, axis=1))) / T
    rate[res.diverged] = np.inf
    return float(np.median(rate))


def bisect(f, lo, hi, n):
    """The zero of an increasing f in [lo, hi] by n bisections (f(lo) < 0 < f(hi) is checked)."""
    flo, fhi = f(lo), f(hi)
    if not (flo < 0 < fhi):
        return float("nan")
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def compute_toy(cfg, quiet):
    from eosdyn.analysis import sgd_threshold

    ls = toy_problem(cfg)
    n = cfg["n"]
    rows = []
    for b in plot.progress(range(1, n + 1), quiet=quiet, desc="toy batch sizes"):
        th = sgd_threshold(ls, b)
        gd = th.gd_threshold
        lo, hi = 0.25 * gd, 1.25 * gd   # bracket from GD's threshold only
        seed = cfg["seed"] + b
        ms = bisect(lambda lr, b=b, seed=seed: moment_growth(ls, lr, b, cfg, seed), lo, hi, cfg["bisections"])
        ly = bisect(lambda lr, b=b, seed=seed: lyapunov_median(ls, lr, b, cfg, seed), lo, 2.5 * gd,
                    cfg["bisections"])
        rows.append(dict(b=b, exact=th.threshold, gd=gd, p=th.p, simulated_ms=ms, simulated_lyapunov=ly,
                         bracket_resolution=(hi - lo) / 2 ** (cfg["bisections"] + 1)))
    return rows


def compute(quick: bool, quiet: bool = False) -> dict:
    cfg = config(quick)
    with plot.Timer() as tn:
        runs = compute_net(cfg["net"], quiet)
    with plot.Timer() as tt:
        toy = compute_toy(cfg["toy"], quiet)
    return dict(cfg=cfg, runs=runs, toy=toy, wall_net=tn.seconds, wall_toy=tt.seconds, quick=quick)


# ----------------------------------------------------------------------------- numbers
def onset_window(step, bs_eta2, level):
    """(onset, mask): the onset is the first record after step 0 with batch sharpness·η/2 ≥ ``level``
    (None if it never gets there); the "after onset" window is the records strictly after it (the
    onset record itself is left out, so that the threshold does not select the first value of the
    window). With no onset the window is empty."""
    step, bs_eta2 = np.asarray(step), np.asarray(bs_eta2)
    hit = np.flatnonzero((step > 0) & (bs_eta2 >= level))
    if not hit.size:
        return None, np.zeros(step.shape, bool)
    onset = int(step[hit[0]])
    return onset, step > onset


def _median(x):
    return float(np.median(x)) if len(x) else float("nan")


def net_stats(run, lr, steps, level):
    """Medians of BS·η/2 and λ_max·η/2 after onset (:func:`onset_window`), and over the second half."""
    bs = run["bs"] * lr / 2
    lam = run["lam"] * lr / 2
    onset, after = onset_window(run["step"], bs, level)
    late = run["step"] >= steps / 2
    return {"batch_size": run["b"], "onset_step": onset, "records_after_onset": int(after.sum()),
            "bs_eta_over_2_median_after_onset": _median(bs[after]),
            "bs_eta_over_2_p10_p90_after_onset": ([float(np.percentile(bs[after], q)) for q in (10, 90)]
                                                  if after.any() else None),
            "lambda_max_eta_over_2_median_after_onset": _median(lam[after]),
            "lambda_max_eta_over_2_max_after_onset": float(np.max(lam[after])) if after.any() else float("nan"),
            "bs_eta_over_2_median_second_half": _median(bs[late]),
            "lambda_max_eta_over_2_median_second_half": _median(lam[late]),
            "bs_eta_over_2_initial": float(bs[0]), "lambda_max_eta_over_2_initial": float(lam[0]),
            "lambda_max_eta_over_2_peak": float(np.max(lam)), "bs_eta_over_2_peak": float(np.max(bs)),
            "records": int(len(bs)), "loss_initial": float(run["loss"][0]),
            "loss_final": float(run["loss"][-1]), "diverged": bool(run["diverged"]),
            "diverged_at": int(run["diverged_at"]), "hvps_batch_sharpness_mean": float(np.mean(run["bs_hvp"])),
            "batch_sharpness_measurements_short_of_target": int(run["bs_target_missed"]),
            "wall_time_s": run["wall"]}


def draw(r):
    fig, axes = plot.new_figure(2, 2, size=FIGSIZE)
    cfg, lr = r["cfg"]["net"], r["cfg"]["net"]["lr"]
    (ax, bx), (cx, dx) = axes
    for i, run in enumerate(r["runs"]):
        c = plot.color("lr", i)
        ax.plot(run["step"], run["bs"] * lr / 2, color=c, lw=1.0, label=f"b = {run['b']}")
        ax.fill_between(run["step"], run["bs_lo"] * lr / 2, run["bs_hi"] * lr / 2, color=c, alpha=0.2, lw=0)
        bx.plot(run["step"], run["lam"] * lr / 2, color=c, lw=1.0, label=f"b = {run['b']}")
        onset, _ = onset_window(run["step"], run["bs"] * lr / 2, cfg["onset_level"])
        if onset is not None:
            for a in (ax, bx):
                a.axvline(onset, color=c, ls=":", lw=0.8)
    for a, what in ((ax, "batch sharpness · η/2"), (bx, "λ_max · η/2 (full batch)")):
        a.axhline(1.0, color="k", ls="--", lw=0.8, label="2/η")
        a.set_xlabel("SGD step")
        a.set_ylabel(what)
        a.legend(fontsize=7)
    ax.set_title(f"SGD η = {lr:g}, {cfg['activation']} MLP {cfg['hidden']} (init ×{cfg['init_scale']:g}), "
                 f"{cfg['n'] or 1797} digits; dotted: onset (95% CI band)", fontsize=8)
    bx.set_title("full-batch sharpness (Lanczos)", fontsize=8)
    plot.panel_label(ax, "a")
    plot.panel_label(bx, "b")
    stats = [net_stats(run, lr, cfg["steps"], cfg["onset_level"]) for run in r["runs"]]
    bsz = [s["batch_size"] for s in stats]
    cx.plot(bsz, [s["bs_eta_over_2_median_after_onset"] for s in stats], "o-", color=plot.color("theory"),
            label="batch sharpness · η/2")
    cx.plot(bsz, [s["lambda_max_eta_over_2_median_after_onset"] for s in stats], "s-", color=plot.color("map"),
            label="λ_max · η/2")
    cx.axhspan(0.9, 1.1, color="0.9", lw=0)
    cx.axhline(1.0, color="k", ls="--", lw=0.8)
    cx.set_xscale("log", base=2)
    cx.set_xlabel("batch size b")
    cx.set_ylabel("median after onset")
    cx.set_title(f"after onset (first record with batch sharpness · η/2 ≥ {cfg['onset_level']:g})", fontsize=8)
    cx.legend(fontsize=7)
    plot.panel_label(cx, "c")
    toy = r["toy"]
    b = [t["b"] for t in toy]
    dx.plot(b, [t["exact"] for t in toy], "k-", lw=1.0, label="exact η* (sgd_threshold)")
    dx.plot(b, [t["simulated_ms"] for t in toy], "o", color=plot.color("theory"), label="simulated, mean square")
    dx.plot(b, [t["simulated_lyapunov"] for t in toy], "^", color="0.5", mfc="none",
            label="simulated, median log-growth (a.s.)")
    dx.plot(b, [t["gd"] for t in toy], ":", color="0.4", lw=0.8, label="GD 2/λ_max")
    dx.set_xlabel("batch size b")
    dx.set_ylabel("threshold η")
    dx.set_title(f"SGD on least squares, n = {r['cfg']['toy']['n']}, d = {r['cfg']['toy']['d']}", fontsize=8)
    dx.legend(fontsize=7)
    plot.panel_label(dx, "d")
    return fig


def summarize(r) -> dict:
    cfg, lr = r["cfg"]["net"], r["cfg"]["net"]["lr"]
    level = cfg["onset_level"]
    stats = [net_stats(run, lr, cfg["steps"], level) for run in r["runs"]]
    bs_med = [s["bs_eta_over_2_median_after_onset"] for s in stats]
    lam_med = [s["lambda_max_eta_over_2_median_after_onset"] for s in stats]
    window = (f"median over the records after the onset (the first record after step 0 with batch sharpness·η/2 "
              f">= {level:g}; the onset record itself excluded); no onset: the claim fails")
    claims = []
    for s in stats:
        m = s["bs_eta_over_2_median_after_onset"]
        claims.append(plot.claim(f"b = {s['batch_size']}: after onset, batch sharpness · η/2 ≈ 1 (batch sharpness "
                                 f"at 2/η)", [0.9, 1.1], m, 0.9 <= m <= 1.1 and not s["diverged"],
                                 "Andreyev & Beneventano 2024", window))
    claims.append(plot.claim("λ_max · η/2 < 1 after onset at every batch size", "< 1", lam_med,
                             all(v < 1.0 for v in lam_med), "Andreyev & Beneventano 2024", window))
    claims.append(plot.claim("λ_max · η/2 increases with the batch size", "increasing", lam_med,
                             bool(np.all(np.diff(lam_med) > 0)), "Andreyev & Beneventano 2024"))
    toy = r["toy"]
    ratio = [t["simulated_ms"] / t["exact"] for t in toy]
    claims.append(plot.claim("SGD's simulated mean-square threshold equals the exact η* of Mulayoff & Michaeli, "
                             "b = 1 … n", "ratio 1 ± 3%", ratio, all(abs(q - 1) <= 0.03 for q in ratio),
                             "Mulayoff & Michaeli, COLT 2024",
                             "bisection on the growth of the ensemble's second moment "
                             "(fresh Gaussian draws each step)"))
    claims.append(plot.claim("the typical trajectory's (a.s.) threshold is at or above the mean-square one",
                             ">= 1", [t["simulated_lyapunov"] / t["exact"] for t in toy],
                             all(t["simulated_lyapunov"] >= t["exact"] * 0.98 for t in toy), "Jensen's inequality",
                             "median of log growth rates; 2% bisection/noise allowance"))
    return {"title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
            "network": {"data": f"sklearn digits, n = {cfg['n']}, one-hot targets, standardised",
                        "model": f"MLP 64-{'-'.join(map(str, cfg['hidden']))}-10, {cfg['activation']}, "
                                 f"Kaiming-normal (fan-in) weights x {cfg['init_scale']:g}, zero biases",
                        "activation": cfg["activation"], "hidden": list(cfg["hidden"]), "init_scale": cfg["init_scale"],
                        "n": cfg["n"] or 1797, "dtype": "float32",
                        "loss": "0.5*sum_outputs mean_examples", "optimizer": "torch.optim.SGD, no momentum",
                        "lr": lr, "edge_2_over_lr": 2 / lr, "steps": cfg["steps"], "track_every": cfg["track_every"],
                        "batch_sharpness_options": cfg["bs_options"], "onset_level": level,
                        "after_onset_window": window, "batch_sizes": list(cfg["batch_sizes"]),
                        "bs_eta_over_2_median_after_onset": bs_med, "lambda_max_eta_over_2_median_after_onset": lam_med,
                        "runs": stats,
                        "series": [{"batch_size": run["b"], "step": run["step"], "bs_eta_over_2": run["bs"] * lr / 2,
                                    "lambda_max_eta_over_2": run["lam"] * lr / 2} for run in r["runs"]],
                        "wall_time_s": r["wall_net"]},
            "toy": {"config": r["cfg"]["toy"], "criterion": "mean square: sign of the mean log growth of tr M_t, "
                    "M_t the ensemble second moment propagated with fresh N(0, M_t) draws each step; context: "
                    "median over the ensemble of log growth of |theta_T - theta*| (a.s. threshold)",
                    "rows": toy, "simulated_over_exact_ms": ratio, "wall_time_s": r["wall_toy"]},
            "claims": claims}


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize, torch_threads=1)

if __name__ == "__main__":
    main()
