r"""Figure 8 — stationary variance of noisy GD and of its SDE as ηλ grows.

Near a minimum, L ≈ ½λθ² per Hessian eigen-mode. With isotropic noise Σ = σ²I:

    noisy GD   θ ← θ − ηλθ + √η σ ξ        stationary Var = σ²/(λ(2 − ηλ))   (0 < ηλ < 2)
    SDE        dθ = −ηλθ dt + √η σ dW       stationary Var = σ²/(2λ)

(time t in GD steps; the map is the SDE's Euler–Maruyama scheme with dt = 1; both laws are
derived in :mod:`eosdyn.analysis.stationary`, the map's from the discrete Lyapunov equation
C = (1 − ηλ)²C + ησ²). The two agree for ηλ → 0 and part ways as ηλ → 2, where the map's
variance diverges — the SDE misses the edge of stability.

One run covers every ηλ: a diagonal quadratic with eigenvalues λ_i and η = 1, so mode i has
ηλ = λ_i. Noisy GD: :func:`eosdyn.sde.noisy_gd`; SDE: :func:`eosdyn.sde.simulate` with the
strong-order-1.5 scheme (``srk15``) and a step dt ≪ 1. The variance is the ensemble variance
averaged over the records after a burn-in of ten relaxation times.

Panels: (a) λ·Var/σ² against ηλ with the curves 1/2 (SDE) and 1/(2 − ηλ) (map);
(b) the ratio Var_map/Var_SDE against 2/(2 − ηλ); (c) the variance against time for three modes.

    python figures/fig8_stationary_variance.py [--quick] [--out DIR]
"""
from __future__ import annotations

import numpy as np

from eosdyn import plot
from eosdyn.analysis.stationary import stationary_variance_per_mode
from eosdyn.losses import Quadratic
from eosdyn.sde import Isotropic, noisy_gd, simulate

NAME = "stationary-variance"
NUMBER = 8
DESCRIPTION = "Stationary variance: SDE σ²/(2λ) vs noisy GD σ²/(λ(2−ηλ)) as ηλ grows to 2"
FIGSIZE = (10.0, 3.4)
SIGMA = 1.0
LR = 1.0


def compute(quick: bool, quiet: bool = False) -> dict:
    hl = np.linspace(0.1, 1.9, 8) if quick else np.concatenate([np.linspace(0.05, 1.8, 22), [1.85, 1.9, 1.95]])
    lam = hl / LR
    loss = Quadratic(eigs=lam)
    n = 1000 if quick else 4000
    steps = 300 if quick else 1000
    dt = 0.1 if quick else 0.05
    theta0 = np.zeros((n, lam.size))
    noise = Isotropic(SIGMA)
    with plot.Timer() as tm:
        gd = noisy_gd(loss, LR, noise, theta0, steps, record_every=1, seed=0)
    with plot.Timer() as ts:
        per = int(round(1 / dt))
        sde = simulate(loss, LR, noise, theta0, dt, steps * per, method="srk15", record_every=per, seed=1)
    relax = 1.0 / np.min(hl * (2 - hl))          # slowest relaxation time of the map's variance, in steps
    burn = int(min(steps // 3, np.ceil(10 * relax)))
    v_map = gd.theta_var[burn:].mean(axis=0)
    v_sde = sde.theta_var[burn:].mean(axis=0)
    th_map = stationary_variance_per_mode(lam, SIGMA ** 2, LR, kind="map")
    th_sde = stationary_variance_per_mode(lam, SIGMA ** 2, LR, kind="sde")
    return dict(hl=hl, lam=lam, n=n, steps=steps, dt=dt, burn=burn, v_map=v_map, v_sde=v_sde, th_map=th_map,
                th_sde=th_sde, t_map=gd.step, var_map_t=gd.theta_var, t_sde=sde.time, var_sde_t=sde.theta_var,
                wall_map=tm.seconds, wall_sde=ts.seconds, quick=quick)


def draw(r):
    fig, axes = plot.new_figure(1, 3, size=FIGSIZE)
    hl, lam = r["hl"], r["lam"]
    s2 = SIGMA ** 2
    grid = np.linspace(0.01, 1.97, 300)
    ax = axes[0]
    ax.plot(grid, 1 / (2 - grid), color=plot.color("map"), lw=1.0, label="σ²/(λ(2−ηλ))  (map)")
    ax.plot(grid, 0.5 + 0 * grid, color=plot.color("sde"), lw=1.0, label="σ²/(2λ)  (SDE)")
    ax.plot(hl, r["v_map"] * lam / s2, "o", color=plot.color("map"), ms=4, label="noisy GD")
    ax.plot(hl, r["v_sde"] * lam / s2, "s", color=plot.color("sde"), ms=4, mfc="none", label="SDE (srk15)")
    ax.axvspan(2.0, 2.1, color="0.85", lw=0)
    ax.text(2.02, 0.6, "no stationary\nlaw (ηλ ≥ 2)", rotation=90, fontsize=6, va="bottom")
    ax.set_yscale("log")
    ax.set_xlim(0, 2.1)
    ax.set_xlabel("ηλ")
    ax.set_ylabel("λ · Var(θ) / σ²")
    ax.set_title("stationary variance per mode")
    ax.legend(fontsize=7, loc="upper left")
    plot.panel_label(ax, "a")

    ax = axes[1]
    ax.plot(grid, 2 / (2 - grid), color=plot.color("theory"), lw=1.0, label="2/(2 − ηλ)")
    ax.plot(hl, r["v_map"] / r["v_sde"], "o", color=plot.color("map"), ms=4, label="measured")
    ax.set_yscale("log")
    ax.set_xlim(0, 2.1)
    ax.set_xlabel("ηλ")
    ax.set_ylabel("Var_map / Var_SDE")
    ax.set_title("the map's excess variance")
    ax.legend(fontsize=7)
    plot.panel_label(ax, "b")

    ax = axes[2]
    pick = [0, len(hl) // 2, len(hl) - 1]
    for j, i in enumerate(pick):
        c = ("#56B4E9", "#009E73", "#CC79A7")[j]
        ax.plot(r["t_map"], r["var_map_t"][:, i] * lam[i] / s2, color=c, lw=0.8, label=f"map, ηλ = {hl[i]:.2f}")
        ax.plot(r["t_sde"], r["var_sde_t"][:, i] * lam[i] / s2, color=c, lw=0.8, ls="--")
    ax.axvline(r["burn"], color="0.6", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("step t (SDE dashed)")
    ax.set_ylabel("λ · Var(θ_t) / σ²")
    ax.set_title(f"relaxation, {r['n']} runs")
    ax.legend(fontsize=6)
    plot.panel_label(ax, "c")
    return fig


def summarize(r) -> dict:
    rel_map = r["v_map"] / r["th_map"] - 1
    rel_sde = r["v_sde"] / r["th_sde"] - 1
    tol = 0.05 if r["quick"] else 0.02
    claims = [
        plot.claim("noisy GD's stationary variance is σ²/(λ(2 − ηλ))", r["th_map"], r["v_map"],
                   bool(np.all(np.abs(rel_map) < tol)), "discrete Lyapunov equation (eosdyn.analysis.stationary)",
                   f"relative tolerance {tol}"),
        plot.claim("the SDE's stationary variance is σ²/(2λ), independent of η", r["th_sde"], r["v_sde"],
                   bool(np.all(np.abs(rel_sde) < tol)), "Ornstein–Uhlenbeck process (Gardiner §4.5.6)",
                   f"relative tolerance {tol}; srk15 with dt = {r['dt']}"),
        plot.claim("map/SDE variance ratio = 2/(2 − ηλ), diverging at the edge ηλ → 2",
                   2 / (2 - r["hl"]), r["v_map"] / r["v_sde"],
                   bool(np.all(np.abs((r["v_map"] / r["v_sde"]) / (2 / (2 - r["hl"])) - 1) < 2 * tol))),
    ]
    return {
        "title": DESCRIPTION, "number": NUMBER, "mode": "quick" if r["quick"] else "full",
        "sigma": SIGMA, "lr": LR, "eta_lambda": r["hl"], "n_trajectories": r["n"], "steps": r["steps"],
        "sde_dt": r["dt"], "sde_method": "srk15", "burn_in_steps": r["burn"],
        "variance_map": r["v_map"], "variance_sde": r["v_sde"],
        "theory_map": r["th_map"], "theory_sde": r["th_sde"],
        "relative_error_map": rel_map, "relative_error_sde": rel_sde,
        "max_abs_relative_error_map": float(np.max(np.abs(rel_map))),
        "max_abs_relative_error_sde": float(np.max(np.abs(rel_sde))),
        "wall_time_map_s": r["wall_map"], "wall_time_sde_s": r["wall_sde"],
        "claims": claims,
    }


main = plot.figure_main(NAME, DESCRIPTION, compute, draw, summarize)

if __name__ == "__main__":
    main()
