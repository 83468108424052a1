r"""Stationary variance of noisy GD on one quadratic mode, and of its SDE.

On a mode with curvature λ, noisy GD is θ ← θ − ηλθ + √η·σ·ξ, ξ ~ N(0, 1) (the
discrete map of the proposal: per-step noise variance ησ²). Its variance obeys
v' = (1 − ηλ)² v + ησ², whose fixed point is

    v_map = ησ² / (1 − (1 − ηλ)²) = σ² / (λ(2 − ηλ)),      needs 0 < ηλ < 2.

The SDE dθ = −ηλθ dt + √η·σ dW (time in steps) is an Ornstein–Uhlenbeck process; by
Itô's formula d(θ²) = (−2ηλθ² + ησ²) dt + …, so dv/dt = −2ηλ v + ησ² and

    v_sde = σ²/(2λ).

Their ratio v_map/v_sde = 2/(2 − ηλ) → 1 as ηλ → 0 and → ∞ at the edge of stability
ηλ → 2: the discrete map's fluctuations blow up where the SDE sees nothing special
(Mandt, Hoffman & Blei, JMLR 18, 2017, §3, for the SDE view of SGD; the map formula
is the AR(1) stationary variance). Run ``python -m theory.noisy_gd``.

**Heavy-ball momentum under noise.** SGD with momentum β (PyTorch's convention,
b ← βb + g, θ ← θ − ηb) with a per-step noise of variance s² entering with the step is,
on one mode, the AR(2) process

    θ_{t+1} = (1 + β − ηλ) θ_t − β θ_{t−1} + ε_t,     Var ε = s² (= ησ² in the map above).

Its Yule–Walker equations γ₀ = φ₁γ₁ + φ₂γ₂ + s², γ₁ = φ₁γ₀ + φ₂γ₁, γ₂ = φ₁γ₁ + φ₂γ₀
(φ₁ = 1 + β − ηλ, φ₂ = −β) give

    γ₀ = (1 + β) s² / ((1 − β) · ηλ · (2 + 2β − ηλ)),     needs 0 < ηλ < 2 + 2β, 0 ≤ β < 1,

which is the AR(1) law at β = 0.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

eta, lam, sigma, v, t = sp.symbols("eta lambda sigma v t", positive=True)
beta, s2 = sp.symbols("beta s2", positive=True)


@lru_cache(maxsize=None)
def derive():
    v_map = sp.solve(sp.Eq(v, (1 - eta * lam) ** 2 * v + eta * sigma**2), v)
    v_sde = sp.solve(sp.Eq(-2 * eta * lam * v + eta * sigma**2, 0), v)
    if len(v_map) != 1 or len(v_sde) != 1:
        raise RuntimeError("expected one stationary variance each")
    vm = sp.factor(sp.simplify(v_map[0]))
    vs = sp.simplify(v_sde[0])
    return {"map": vm, "sde": vs, "ratio": sp.simplify(vm / vs)}


@lru_cache(maxsize=None)
def derive_heavyball():
    """γ₀ of the AR(2) heavy-ball process with innovation variance s², from Yule–Walker."""
    g0, g1, g2 = sp.symbols("gamma0 gamma1 gamma2")
    phi1, phi2 = 1 + beta - eta * lam, -beta
    sol = sp.solve([sp.Eq(g0, phi1 * g1 + phi2 * g2 + s2), sp.Eq(g1, phi1 * g0 + phi2 * g1),
                    sp.Eq(g2, phi1 * g1 + phi2 * g0)], [g0, g1, g2], dict=True)
    if len(sol) != 1:
        raise RuntimeError("expected one stationary solution")
    return sp.factor(sp.simplify(sol[0][g0]))


def variance_heavyball(lam_, s2_, eta_, beta_):
    """(1 + β)s²/((1 − β)ηλ(2 + 2β − ηλ)): the stationary variance of heavy-ball SGD on one mode."""
    return float(derive_heavyball().subs({lam: lam_, s2: s2_, eta: eta_, beta: beta_}))


def variance_map(lam_, sigma2, eta_):
    """σ²/(λ(2 − ηλ))."""
    return float(derive()["map"].subs({lam: lam_, sigma: sp.sqrt(sigma2), eta: eta_}))


def variance_sde(lam_, sigma2, eta_=1.0):
    """σ²/(2λ) (independent of η)."""
    return float(derive()["sde"].subs({lam: lam_, sigma: sp.sqrt(sigma2), eta: eta_}))


def main():
    d = derive()
    print("map  (AR(1) fixed point):  v =", d["map"])
    print("SDE  (Ornstein-Uhlenbeck): v =", d["sde"])
    print("ratio map/SDE:", d["ratio"])
    print("heavy-ball map (AR(2), innovation variance s2): v =", derive_heavyball())


if __name__ == "__main__":
    main()
