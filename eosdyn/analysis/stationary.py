r"""Stationary covariances of noisy gradient descent on a quadratic: SDE and discrete map.

**Conventions** (:mod:`eosdyn.sde.noise`). A step adds noise of covariance c²Σ: c² = η² in Li,
Malladi & Arora's SDE of SGD (``convention="sgd"``, arXiv 2102.12470; **the default**, as in
:mod:`eosdyn.sde` and the stepping core :mod:`eosdyn.engine.noise`), where Σ = Σ_B is SGD's
minibatch-gradient covariance; c² = η in the EoS-Ada proposal's form (``convention="proposal"``,
the form the formulas below are written in). Every formula below holds for "sgd" with Σ replaced
by ηΣ, so under "sgd" the covariances are η times the proposal's. (Before the keyword existed
these functions computed the "proposal" form; pass ``convention="proposal"`` to reproduce
earlier results.) For SGD itself on a finite sum, with the batch Hessian's randomness, see
:func:`eosdyn.analysis.sgd_stationary_covariance`.

Near a minimum, L(θ) ≈ ½ θᵀHθ. The proposal's continuous model, with time measured
in steps (one unit of t = one step of size η),

    dθ = −ηHθ dt + √(ηΣ) dW                                               (SDE)

is an Ornstein–Uhlenbeck process with drift matrix A = ηH. For H positive definite
its stationary covariance C solves the continuous Lyapunov equation (Gardiner,
*Stochastic Methods*, 4th ed., §4.5.6; Risken, *The Fokker–Planck Equation*, §3.2)

    A C + C Aᵀ = ηΣ,     per eigen-mode (commuting H, Σ = σ²I):  C = σ²/(2λ).

The discrete counterpart — noisy GD, θ ← θ − ηHθ + √η·ξ with ξ ~ N(0, Σ), i.e. a
per-step noise covariance ηΣ — is a linear AR(1) map whose stationary covariance
solves the discrete Lyapunov equation

    C = (I − ηH) C (I − ηH)ᵀ + ηΣ,     per mode: C = ησ²/(1 − (1−ηλ)²) = σ²/(λ(2 − ηλ)),

which exists iff ρ(I − ηH) < 1, i.e. 0 < ηλ < 2 for every mode. The ratio
map/SDE = 2/(2 − ηλ) is 1 + O(ηλ) for small steps and diverges at the edge of
stability ηλ → 2. Both per-mode laws are derived with sympy in ``theory/noisy_gd.py``.

**Heavy-ball momentum** (``momentum=β``, map only). SGD with momentum, b ← βb + g,
θ ← θ − ηb, whose noise enters with the step, is θ_{t+1} = θ_t − ηHθ_t + β(θ_t − θ_{t−1})
+ √η·ξ_t: on the state z = (θ_t, θ_{t−1}),

    z' = A z + (√η ξ, 0),   A = [[(1 + β)I − ηH, −βI], [I, 0]],   C_z = A C_z Aᵀ + diag(ηΣ, 0),

and the θ-block of C_z is returned. Per mode it is the AR(2) variance
(1 + β)σ²/((1 − β)λ(2 + 2β − ηλ)), which needs 0 < ηλ < 2 + 2β (derived in
``theory/noisy_gd.py``). Note that noise *added to θ after* a heavy-ball step (leaving the
buffer b alone) is another process, an ARMA(2, 1) with a smaller variance.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov

from .._validate import choice, in_range, positive, symmetric
from ..sde.noise import noise_convention


def stationary_covariance(H, noise_cov, lr, kind: str = "sde", momentum: float = 0.0, *,
                          convention: str = "sgd") -> np.ndarray:
    """Stationary covariance of noisy GD on ½θᵀHθ with per-step noise covariance c²Σ.

    Parameters
    ----------
    H : (d, d) symmetric Hessian.
    noise_cov : (d, d) symmetric positive semi-definite Σ (a scalar s means s·I).
    lr : step size η > 0.
    kind : "sde" — solve ηH C + C ηH = c²Σ (needs H positive definite);
           "map" — solve C = (I − ηH) C (I − ηH)ᵀ + c²Σ (needs ρ(I − ηH) < 1).
    momentum : heavy-ball β in [0, 1), ``kind="map"`` only: the θ-block of the stationary
        covariance of SGD with momentum (module docstring; needs ρ(A) < 1, i.e.
        0 < ηλ < 2 + 2β for every eigenvalue λ of H).
    convention : "sgd" (default: c² = η², Li, Malladi & Arora's SDE of SGD: with Σ = Σ_B the
        map is SGD's noise, in Gaussian form and without the batch Hessian's randomness; the
        default of :func:`eosdyn.sde.noisy_gd` and of the stepping core's ``noise=``) or
        "proposal" (c² = η, the EoS-Ada proposal's dθ = −η∇L dt + √(ηΣ) dW, t in steps). The
        "sgd" answer is η times the "proposal" one.

    Raises ValueError (naming the parameter) for non-square or non-symmetric H or Σ,
    an indefinite Σ, an unknown convention, or when no stationary distribution exists.
    """
    H = symmetric("H", H)
    d = H.shape[0]
    if np.ndim(noise_cov) == 0:
        S = positive("noise_cov", noise_cov, allow_zero=True) * np.eye(d)
    else:
        S = symmetric("noise_cov", noise_cov)
        if S.shape != H.shape:
            raise ValueError(f"noise_cov must have the shape of H {H.shape}, got {S.shape}")
    eta = positive("lr", lr)
    kind = choice("kind", kind, ("sde", "map"))
    beta = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
    if beta and kind != "map":
        raise ValueError("momentum is defined for kind='map' only (heavy-ball is a discrete map)")
    c2 = eta * eta if noise_convention(convention) == "sgd" else eta   # per-step noise c²Σ
    sev = np.linalg.eigvalsh(S)
    if sev[0] < -1e-12 * max(1.0, abs(sev[-1])):
        raise ValueError(f"noise_cov must be positive semi-definite, has eigenvalue {sev[0]:.3g}")
    hev = np.linalg.eigvalsh(H)
    if kind == "sde":
        if hev[0] <= 0:
            raise ValueError(f"H must be positive definite for a stationary SDE covariance "
                             f"(smallest eigenvalue {hev[0]:.3g})")
        C = solve_continuous_lyapunov(eta * H, c2 * S)
    elif beta:
        if hev[0] <= 0 or eta * hev[-1] >= 2.0 + 2.0 * beta:
            raise ValueError(f"heavy-ball SGD has no stationary distribution: needs 0 < lr·λ < 2 + 2·momentum "
                             f"= {2 + 2 * beta:g} for every eigenvalue λ of H, got lr·λ in "
                             f"[{eta * hev[0]:.6g}, {eta * hev[-1]:.6g}]")
        from .sgd import error_map

        A = error_map(H, eta, beta)
        Q = np.zeros((2 * d, 2 * d))
        Q[:d, :d] = c2 * S
        C = solve_discrete_lyapunov(A, Q)[:d, :d]
    else:
        rho = np.abs(1.0 - eta * hev).max()
        if rho >= 1.0:
            raise ValueError(f"noisy GD has no stationary distribution: ρ(I − lr·H) = {rho:.6g} >= 1 "
                             f"(needs 0 < lr·λ < 2 for every eigenvalue λ of H)")
        A = np.eye(d) - eta * H
        C = solve_discrete_lyapunov(A, c2 * S)
    return 0.5 * (C + C.T)


def stationary_variance_per_mode(lam, sigma2, lr, kind: str = "sde", momentum: float = 0.0, *,
                                 convention: str = "sgd"):
    """Closed forms per eigen-mode: σ²/(2λ) (SDE) and σ²/(λ(2 − ηλ)) (map); with heavy-ball
    ``momentum`` β (map only) the AR(2) law (1 + β)σ²/((1 − β)λ(2 + 2β − ηλ)), lr·λ < 2 + 2β.
    These are the ``convention="proposal"`` forms (per-step noise ησ²); the default
    ``convention="sgd"`` (per-step η²σ², SGD's scale) multiplies each by η (see
    :func:`stationary_covariance`).

    ``lam`` (a number or an array of curvatures λ) must be finite and > 0 for every mode,
    and for ``kind="map"`` also lr·λ < 2 + 2β (2 without momentum); ``sigma2`` (σ², a number or an array that
    broadcasts with ``lam``) finite and >= 0; ``lr`` finite and > 0. Outside these ranges
    there is no stationary distribution, and this raises ValueError naming the parameter
    and its valid range, as :func:`stationary_covariance` does (the formulas would give a
    negative or infinite "variance"). Complex input raises TypeError.
    """
    kind = choice("kind", kind, ("sde", "map"))
    eta = positive("lr", lr)
    beta = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
    if beta and kind != "map":
        raise ValueError("momentum is defined for kind='map' only (heavy-ball is a discrete map)")
    sgd = noise_convention(convention) == "sgd"
    lam = _real_array("lam", lam)
    s2 = _real_array("sigma2", sigma2)
    if np.any(s2 < 0):
        raise ValueError(f"sigma2 must be in [0, inf) (a variance), got {float(s2[s2 < 0].ravel()[0]):g}")
    if np.any(lam <= 0):
        raise ValueError(f"lam must be in (0, inf) for every mode (no stationary distribution at curvature "
                         f"<= 0), got lam = {float(lam[lam <= 0].ravel()[0]):g}")
    edge = 2.0 + 2.0 * beta
    if kind == "map" and np.any(eta * lam >= edge):
        bad = float(lam[eta * lam >= edge].ravel()[0])
        raise ValueError(f"lr·lam must be in (0, {edge:g}) for every mode with kind='map' (noisy GD has no "
                         f"stationary distribution otherwise), got lr·lam = {eta * bad:.6g} at lam = {bad:g}, "
                         f"lr = {eta:g}")
    if sgd:
        sigma2 = eta * s2
    if kind == "sde":
        return sigma2 / (2.0 * lam)
    return (1.0 + beta) * sigma2 / ((1.0 - beta) * lam * (edge - lr * lam))


def _real_array(name, value):
    """``value`` as a float array: TypeError for complex or non-numeric input, ValueError if not finite."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):  # ragged sequences
        a = None
    if a is None or a.dtype.kind not in "iuf":
        got = "complex values" if a is not None and a.dtype.kind == "c" else type(value).__name__
        raise TypeError(f"{name} must be a real number or an array of real numbers, got {got}")
    a = a.astype(float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return a
