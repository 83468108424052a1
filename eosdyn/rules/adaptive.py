"""The curvature-aware rules of the EoS proposal: EoS-Ada and DCAO.

Their hyperparameter schedules live in :mod:`eosdyn.rules.schedules` and are
shared with the torch optimizers of :mod:`eosdyn.bridge`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Normals: eosdyn._rng's ziggurat (CHANGELOG.md). numba's disk cache checks only this file's
# stamp, not the modules it calls: this file changed with the sampler so that cached kernels recompile.
from .._rng import rng_fill_normal
from .._validate import choice, in_range, nonneg_int, pair, positive
from .base import Rule, check_curvature
from .schedules import dcao_hyperparameters, eosada_lr, eosada_noise


# --------------------------------------------------------------------------- EoS-Ada
@njit(cache=True)
def _eosada_step(theta, state, g, curv, hyper, t, rng, work):
    alpha, eps, beta, gamma = hyper[0], hyper[1], hyper[2], hyper[3]
    lam = curv[0]
    lr = eosada_lr(lam, alpha, eps)
    sigma = eosada_noise(lam, beta, gamma)
    d = theta.shape[0]
    if sigma != 0.0:
        rng_fill_normal(rng, work)
        for i in range(d):
            theta[i] += -lr * g[i] + sigma * work[i]
    else:
        for i in range(d):
            theta[i] -= lr * g[i]
    return lr


class EoSAda(Rule):
    """EoS-Ada, as proposed: a step size that tracks the edge, plus curvature-damped noise.

        η_t = α / (|λ_max| + ε),   σ_t = β · exp(−γ · λ_max),
        θ ← θ − η_t ∇L(θ) + σ_t ξ,   ξ ~ N(0, I)

    (α = ``alpha``, ε = ``eps`` ≥ 0, β = ``noise_scale``, γ = ``noise_decay``). On the top
    Hessian mode the effective step is η_t λ_max = α λ/(λ+ε) < α: with exact λ_max,
    the iterate stays linearly stable for α < 2(1 + ε/λ). The proposal assumes
    λ_max > 0; at negative curvature the step uses |λ_max| (a bounded descent step, where
    α/(λ_max + ε) would be gradient ascent), and where |λ_max| + ε = 0 (ε = 0 on a flat probe)
    the step is 0: there is no curvature to set it from (:mod:`eosdyn.rules.schedules`).

    ``curvature`` picks the λ_max estimate, refreshed every ``curvature_every`` steps:

    - ``"auto"`` (default): exact eigh for d ≤ 64, Lanczos (``lanczos_steps``) above;
    - ``"exact"``, ``"lanczos"``, ``"power"``: estimates of λ_max (largest algebraic
      for exact/Lanczos; power iteration finds the largest *magnitude*, equal to λ_max
      for PSD Hessians);
    - ``"hutchinson"``: the proposal's own estimator, the mean of uᵀHu over
      ``hutchinson_samples`` random unit directions u (Gaussian v normalised).
      Its expectation is tr(H)/d, the *mean* eigenvalue — not λ_max — so with it
      the step size is set by the average curvature and can exceed the edge 2/λ_max.
      Offered faithfully, for comparison.
    """

    name = "eosada"
    step_parameter = "alpha"
    summary = "EoS-Ada: η_t = α/(|λ_max|+ε) plus curvature-damped noise"
    color = "#009E73"
    torch_twin = "eosdyn.bridge.EoSAda"
    step_fn = staticmethod(_eosada_step)
    curvature_k = 1

    def __init__(self, alpha=1.9, eps=1e-8, noise_scale=0.0, noise_decay=0.0, curvature="auto",
                 curvature_every=1, lanczos_steps=20, hutchinson_samples=10):
        self.alpha = positive("alpha", alpha)
        self.eps = positive("eps", eps, allow_zero=True)
        self.noise_scale = positive("noise_scale", noise_scale, allow_zero=True)
        self.noise_decay = in_range("noise_decay", noise_decay, -np.inf, np.inf)
        check_curvature(curvature, 1, curvature_every, lanczos_steps, hutchinson_samples)
        self.curvature_method = curvature
        self.curvature_every = int(curvature_every)
        self.lanczos_steps = int(lanczos_steps)
        self.hutchinson_samples = int(hutchinson_samples)
        self.hyper = np.array([self.alpha, self.eps, self.noise_scale, self.noise_decay])

    @property
    def stochastic(self):
        return self.noise_scale > 0

    def deterministic_hyper(self):
        h = self.hyper.copy()
        h[2] = 0.0
        return h

    def edge_constant(self):
        """2, for the step η_t in force: with η_t frozen the map is GD's, whose edge is η_tλ = 2."""
        return 2.0

    @classmethod
    def threshold(cls, curvature, **hyper):
        """α* = 2(1 + ε/λ): EoS-Ada's effective step αλ/(λ + ε) on the top mode reaches 2.
        None with the Hutchinson estimate (its step follows tr(H)/d, not λ_max)."""
        lam = positive("curvature", curvature)
        probe = cls(alpha=1.0, **hyper)
        if probe.curvature_method == "hutchinson":
            return None
        return 2.0 * (1.0 + probe.eps / lam)

    def torch_kwargs(self):
        if self.curvature_method == "power":
            raise ValueError("the torch EoSAda offers curvature 'lanczos', 'exact' or 'hutchinson', not 'power'")
        method = "lanczos" if self.curvature_method == "auto" else self.curvature_method
        kw = {"alpha": self.alpha, "eps": self.eps, "noise_scale": self.noise_scale,
              "noise_decay": self.noise_decay, "curvature": method,
              "curvature_every": self.curvature_every, "lanczos_steps": self.lanczos_steps}
        if method == "hutchinson":
            kw["hutchinson_samples"] = self.hutchinson_samples
        return kw

    def hyperparameters(self):
        return {"alpha": self.alpha, "eps": self.eps, "noise_scale": self.noise_scale,
                "noise_decay": self.noise_decay, "curvature": self.curvature_method,
                "curvature_every": self.curvature_every, "lanczos_steps": self.lanczos_steps,
                "hutchinson_samples": self.hutchinson_samples}


# ------------------------------------------------------------------------------ DCAO
_DCAO_VARIANTS = {"refined": 0, "v1": 1}


@njit(cache=True)
def _dcao_step(theta, state, g, curv, hyper, t, rng, work):
    k = int(hyper[13])
    lr, mom, wd = dcao_hyperparameters(curv, k, int(hyper[12]), hyper[0], hyper[1], hyper[2],
                                       hyper[3], hyper[4], hyper[5], hyper[6], hyper[7],
                                       hyper[8], hyper[9], hyper[10], hyper[11])
    for i in range(theta.shape[0]):
        state[i] = mom * state[i] + g[i] + wd * theta[i]
        theta[i] -= lr * state[i]
    return lr


class DCAO(Rule):
    """DCAO: momentum SGD whose step, momentum and weight decay follow the Hessian spectrum.

    Every ``curvature_every`` (T_c) steps the top-``k`` Hessian eigenvalues are
    probed by ``lanczos_steps`` (m) Lanczos steps; ρ = λ₁ and γ = λ₁ − λ₂. Then
    (refined form, :func:`eosdyn.rules.schedules.dcao_hyperparameters`):

        η = η₀ f(ρ),    f(ρ) = clip(exp(−α(ρ − ρ_ref)), f_min, f_max)   [0.5, 2]
        β = β₀ g(γ),    g(γ) = 1 + tanh(β₁(γ − γ_ref))
        λ_wd = λ₀ (1 + κ ρ/ρ_ref)
        v ← β v + ∇L + λ_wd θ,   θ ← θ − η v

    Parameter names: η₀ = ``lr``, β₀ = ``momentum``, λ₀ = ``weight_decay``,
    α = ``alpha``, ρ_ref = ``rho_ref`` (default 2/η₀, the edge of GD at η₀),
    f_min/f_max = ``lr_factor_range``, β₁ = ``beta1``, γ_ref = ``gap_ref``,
    κ = ``wd_gain`` (the proposal's "λ₁", renamed to avoid clashing with the eigenvalue).

    Since g ∈ (0, 2), β ranges over (0, 2β₀): the default β₀ = 0.45 keeps β < 0.9;
    β₀ ≥ 0.5 allows β ≥ 1, where momentum is unstable at any step size.

    ``variant="v1"`` is the earlier form: η = η₀e^(−αρ), β = β₀e^(−β_v1·gap),
    λ_wd = λ₀e^(−γ_v1·ρ), gap = max_{i,j}|λᵢ − λⱼ| over the top k
    (β_v1 = ``v1_beta``, γ_v1 = ``v1_gamma``).
    """

    name = "dcao"
    summary = "DCAO: momentum SGD whose η, β, weight decay follow the Hessian spectrum"
    color = "#009E73"
    torch_twin = "eosdyn.bridge.DCAO"
    spec_kinds = {"lr_factor_range": "floats", "rho_ref": "optfloat"}
    step_fn = staticmethod(_dcao_step)

    def __init__(self, lr=0.01, momentum=0.45, weight_decay=0.0, alpha=0.1, rho_ref=None,
                 lr_factor_range=(0.5, 2.0), beta1=1.0, gap_ref=0.0, wd_gain=1.0, k=2,
                 curvature_every=100, lanczos_steps=20, curvature="lanczos", variant="refined",
                 v1_beta=0.1, v1_gamma=0.1):
        self.lr = positive("lr", lr)
        self.momentum = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
        self.weight_decay = positive("weight_decay", weight_decay, allow_zero=True)
        self.alpha = positive("alpha", alpha, allow_zero=True)
        self.rho_ref = 2.0 / self.lr if rho_ref is None else positive("rho_ref", rho_ref)
        lo, hi = pair("lr_factor_range", lr_factor_range)
        lo = positive("lr_factor_range[0]", lo)
        hi = positive("lr_factor_range[1]", hi)
        if lo > hi:
            raise ValueError(f"lr_factor_range must satisfy low <= high, got {lr_factor_range!r}")
        self.lr_factor_range = (lo, hi)
        self.beta1 = positive("beta1", beta1, allow_zero=True)
        self.gap_ref = positive("gap_ref", gap_ref, allow_zero=True)
        self.wd_gain = positive("wd_gain", wd_gain, allow_zero=True)
        self.variant = choice("variant", variant, _DCAO_VARIANTS)
        self.v1_beta = positive("v1_beta", v1_beta, allow_zero=True)
        self.v1_gamma = positive("v1_gamma", v1_gamma, allow_zero=True)
        check_curvature(curvature, k, curvature_every, lanczos_steps)
        self.curvature_k = nonneg_int("k", k, minimum=1)
        self.curvature_method = curvature
        self.curvature_every = int(curvature_every)
        self.lanczos_steps = int(lanczos_steps)
        self.hyper = np.array([self.lr, self.momentum, self.weight_decay, self.alpha, self.rho_ref,
                               lo, hi, self.beta1, self.gap_ref, self.wd_gain, self.v1_beta,
                               self.v1_gamma, float(_DCAO_VARIANTS[self.variant]),
                               float(self.curvature_k)])

    def state_size(self, dim):
        return dim

    def schedule(self, eigenvalues):
        """(η, β, λ_wd) for the given top-k eigenvalues (descending)."""
        e = np.sort(np.asarray(eigenvalues, float))[::-1].copy()
        h = self.hyper
        return dcao_hyperparameters(e, min(len(e), self.curvature_k), int(h[12]), *h[:12])

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "alpha": self.alpha, "rho_ref": self.rho_ref,
                "lr_factor_range": list(self.lr_factor_range), "beta1": self.beta1,
                "gap_ref": self.gap_ref, "wd_gain": self.wd_gain, "k": self.curvature_k,
                "curvature_every": self.curvature_every, "lanczos_steps": self.lanczos_steps,
                "curvature": self.curvature_method, "variant": self.variant,
                "v1_beta": self.v1_beta, "v1_gamma": self.v1_gamma}
