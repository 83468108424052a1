"""Scalar hyperparameter schedules of the curvature-aware rules — one formula, one place.

Every function here is a plain scalar function compiled with numba, so it can be
called from the numba kernels of :mod:`eosdyn.sim` *and* from Python (the torch
optimizers of :mod:`eosdyn.bridge` call it with Python floats). No other module
may restate these formulas.

EoS-Ada (the proposal's adaptive rule)
    η_t = α / (|λ_max| + ε)                                :func:`eosada_lr`
    σ_t = β · exp(−γ · λ_max)                              :func:`eosada_noise`
    so the effective step on the top mode is η_t λ_max = α λ/(λ+ε) < α, and the
    linear edge η_t λ_max = 2 is reached at α = 2 (1 + ε/λ). The proposal assumes
    λ_max > 0; where the probed λ_max is negative (a concave region) the step uses its
    magnitude, so it stays positive (a descent step) and bounded by α/|λ_max|, where
    α/(λ_max + ε) would turn into gradient *ascent*. With ε = 0 and a probe of exactly
    λ_max = 0 (a flat region) the step is defined as 0 — there is no curvature to set it
    from — where α/0 would be infinite (the toy rule and the torch optimizer alike).

DCAO, refined form (curvature probe every T_c steps; ρ = λ₁, γ = λ₁ − λ₂)
    η  = η₀ · f(ρ),  f(ρ) = clip(exp(−α (ρ − ρ_ref)), f_min, f_max), default [0.5, 2]
    β  = β₀ · g(γ),  g(γ) = 1 + tanh(β₁ (γ − γ_ref))        (so 0 < β < 2β₀)
    λ_wd = λ₀ (1 + κ · ρ / ρ_ref)                          (κ is the proposal's "λ₁")
    v ← β v + ∇L + λ_wd θ ;  θ ← θ − η v

DCAO, earlier variant
    η = η₀ e^(−α ρ),  μ = μ₀ e^(−β gap),  λ_wd = λ₀ e^(−γ ρ),
    gap = max_{i,j} |λ_i − λ_j| over the top-k eigenvalues.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def eosada_lr(lambda_max, alpha, eps):
    """EoS-Ada step size η_t = α / (|λ_max| + ε), 0 where |λ_max| + ε = 0 (module docstring)."""
    den = abs(lambda_max) + eps
    return 0.0 if den == 0.0 else alpha / den


@njit(cache=True)
def eosada_noise(lambda_max, noise_scale, noise_decay):
    """EoS-Ada noise scale σ_t = β · exp(−γ · λ_max) (β = noise_scale, γ = noise_decay)."""
    return noise_scale * np.exp(-noise_decay * lambda_max)


@njit(cache=True)
def dcao_lr_factor(rho, alpha, rho_ref, f_min, f_max):
    """DCAO f(ρ) = clip(exp(−α (ρ − ρ_ref)), f_min, f_max)."""
    f = np.exp(-alpha * (rho - rho_ref))
    if f < f_min:
        return f_min
    if f > f_max:
        return f_max
    return f


@njit(cache=True)
def dcao_momentum_factor(gap, beta1, gap_ref):
    """DCAO g(γ) = 1 + tanh(β₁ (γ − γ_ref)), in (0, 2)."""
    return 1.0 + np.tanh(beta1 * (gap - gap_ref))


@njit(cache=True)
def dcao_weight_decay(rho, wd0, wd_gain, rho_ref):
    """DCAO λ_wd = λ₀ (1 + κ ρ / ρ_ref)."""
    return wd0 * (1.0 + wd_gain * rho / rho_ref)


@njit(cache=True)
def dcao_v1_lr(rho, lr0, alpha):
    """Earlier DCAO variant: η = η₀ e^(−α ρ)."""
    return lr0 * np.exp(-alpha * rho)


@njit(cache=True)
def dcao_v1_momentum(gap, mu0, beta):
    """Earlier DCAO variant: μ = μ₀ e^(−β gap)."""
    return mu0 * np.exp(-beta * gap)


@njit(cache=True)
def dcao_v1_weight_decay(rho, wd0, gamma):
    """Earlier DCAO variant: λ_wd = λ₀ e^(−γ ρ)."""
    return wd0 * np.exp(-gamma * rho)


@njit(cache=True)
def spectral_gap(eigs, k):
    """γ = λ₁ − λ₂ of the first k entries of ``eigs`` sorted descending (0 if k < 2)."""
    if k < 2:
        return 0.0
    return eigs[0] - eigs[1]


@njit(cache=True)
def max_pairwise_gap(eigs, k):
    """max_{i,j<k} |λ_i − λ_j| = max − min of the first k entries (earlier DCAO's gap)."""
    if k < 2:
        return 0.0
    lo = eigs[0]
    hi = eigs[0]
    for i in range(1, k):
        if eigs[i] < lo:
            lo = eigs[i]
        if eigs[i] > hi:
            hi = eigs[i]
    return hi - lo


@njit(cache=True)
def dcao_hyperparameters(eigs, k, variant, lr0, mom0, wd0, alpha, rho_ref, f_min, f_max,
                         beta1, gap_ref, wd_gain, v1_beta, v1_gamma):
    """(η, β, λ_wd) of DCAO from the top-k eigenvalues ``eigs`` (descending).

    ``variant`` 0 is the refined form, 1 the earlier variant (see module docstring).
    """
    rho = eigs[0]
    if variant == 0:
        gap = spectral_gap(eigs, k)
        lr = lr0 * dcao_lr_factor(rho, alpha, rho_ref, f_min, f_max)
        mom = mom0 * dcao_momentum_factor(gap, beta1, gap_ref)
        wd = dcao_weight_decay(rho, wd0, wd_gain, rho_ref)
    else:
        gap = max_pairwise_gap(eigs, k)
        lr = dcao_v1_lr(rho, lr0, alpha)
        mom = dcao_v1_momentum(gap, mom0, v1_beta)
        wd = dcao_v1_weight_decay(rho, wd0, v1_gamma)
    return lr, mom, wd
