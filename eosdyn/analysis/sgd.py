r"""The stochastic edge: SGD's exact mean-square stability threshold and batch sharpness.

**SGD's linear stability** (Mulayoff & Michaeli, COLT 2024). Near a minimum θ* of a
finite sum L = (1/n) Σᵢ ℓᵢ with per-example Hessians Hᵢ (exactly, for linear regression:
Hᵢ = xᵢxᵢᵀ), the error e = θ − θ* of SGD with batch B evolves by the random linear map
e ← (I − ηH_B) e, H_B = (1/|B|) Σ_{i∈B} Hᵢ; with heavy-ball momentum β the state
z = (e_t, e_{t−1}) evolves by

    A_B = [[(1 + β)I − ηH_B, −βI], [I, 0]]      (θ_{t+1} = θ_t − ηg_B + β(θ_t − θ_{t−1})),

PyTorch's ``SGD(momentum=β)`` written on θ alone. The second moment M = E[zzᵀ] follows the
linear operator M ↦ E[A_B M A_Bᵀ], whose matrix on vec(M) is E[A_B ⊗ A_B]. A_B is affine in
H_B, so the operator depends on the sampling only through E[H_B] = H and

    E[H_B ⊗ H_B] = (1 − p) H ⊗ H + p · (1/n) Σᵢ Hᵢ ⊗ Hᵢ,
    p = (n − B)/(B(n − 1))  (without replacement),   p = 1/B  (with replacement):

SGD is, in second moments, the *mixture* process that takes a full-batch step with
probability 1 − p and a single-example step with probability p. SGD is mean-square stable
iff the spectral radius ρ(E[A_B ⊗ A_B]) < 1; :func:`sgd_threshold` returns the smallest
η > 0 where it reaches 1. It is at most GD's (or heavy-ball's) threshold: E[zzᵀ] ⪰ E[z]E[z]ᵀ
and the mean follows full-batch GD. Directions in the null space of H (where every Hᵢ
vanishes, e.g. over-parameterised regression) are neutral for every η and are left out.

Beside it, **Wu, Ma & E (NeurIPS 2018)**, with sharpness a = λ_max(H) and non-uniformity
s = λ_max(Σ_H)^{1/2}, Σ_H = (1/n)ΣᵢHᵢ² − H²:
- their sufficient condition λ_max((I − ηH)² + pη²Σ_H) ≤ 1 (then E‖e‖² cannot grow, as
  E‖e_{t+1}‖² = E[e_tᵀ((I − ηH)² + pη²Σ_H)e_t]) gives a *lower* bound on the exact threshold;
- their conditions a ≤ 2/η and s ≤ 1/(η√p), which they state as necessary, give
  min(2/a, 1/(s√p)). In one dimension the sufficient condition is exact and this is an
  upper bound on it (2a/(a² + ps²) ≤ min(2/a, 1/(s√p))). In several dimensions it is not a
  bound: the exact threshold can lie above it (tests/test_sgd.py has a case), because the
  worst direction of Σ_H need not be one the dynamics excite.

**SGD's stationary covariance** (:func:`sgd_stationary_covariance`). On least squares SGD is an
*affine* random map, exactly: with e = θ − θ*, per-example gradients gᵢ(θ) = Hᵢe + cᵢ
(cᵢ = gᵢ(θ*), Hᵢ = xᵢxᵢᵀ) and batch means H_B, c_B,

    e_{k+1} = A_B e_k + u_B,      A_B = I − ηH_B,   u_B = −η c_B,

a fresh batch each step (B distinct examples, uniform; or B i.i.d. draws with replacement).
On the augmented state z = (e, 1) this is linear, z' = Ã_B z with Ã_B = [[A_B, u_B], [0, 1]]
= I − η·Ẽ_B, Ẽ_B the batch mean of Ẽᵢ = [[Hᵢ, cᵢ], [0, 0]]; so the mixture identity above,
applied to Ẽᵢ, gives E[Ã_B ⊗ Ã_B] exactly, and the stationary second moment
N = E[zzᵀ] = [[M, m], [mᵀ, 1]] solves N = E[Ã_B N Ã_Bᵀ] with N_{d+1,d+1} = 1. Written out,

    m = A m + ū,    M = E[A_B M A_Bᵀ] + E[A_B m u_Bᵀ] + E[u_B mᵀ A_Bᵀ] + E[u_B u_Bᵀ],

whose cross terms are kept exactly (they vanish at θ* = the minimiser, where ū = −η∇L(θ*) = 0
makes m = 0, leaving M = E[A_B M A_Bᵀ] + η²Σ_B(θ*) with Σ_B(θ*) = p·C(θ*), C the per-example
gradient covariance: the discrete Lyapunov-type equation (I − T) vec M = vec Q with
T = E[A_B ⊗ A_B] and Q = η²Σ_B(θ*)). It exists iff SGD is mean-square stable, ρ(T) < 1
(η below :func:`sgd_threshold`).

**Batch sharpness** (Andreyev & Beneventano, arXiv 2412.20553): E_B[g_Bᵀ H_B g_B / ‖g_B‖²],
the curvature of the batch loss along the batch's own gradient — the quantity SGD holds at
2/η, while the full-batch λ_max sits below it. :func:`batch_sharpness` computes it exactly,
by enumerating every batch where C(n, B) is small, and by Monte Carlo otherwise, next to
the "expectation inside" variant E[g_BᵀH_Bg_B]/E[‖g_B‖²].
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from .._validate import in_range, nonneg_int, positive, seed_value
from ..losses.finite_sum import FiniteSumLoss, minibatch_factor

__all__ = ["SGDThreshold", "BatchSharpness", "sgd_moment_operator", "sgd_threshold", "batch_sharpness",
           "adaptive_batch_mean", "error_map", "sgd_stationary_covariance"]


def _finite_sum(loss, where):
    if not isinstance(loss, FiniteSumLoss):
        raise TypeError(f"{where} needs a finite-sum loss (eosdyn.losses.FiniteSumLoss, e.g. LeastSquares), "
                        f"got {type(loss).__name__}")
    return loss


def _batch(loss, batch_size, replacement):
    """(B, p): the batch size, checked against n by :func:`minibatch_factor`, and the mixture's p."""
    p = minibatch_factor(loss.n_examples, batch_size, replacement)
    return int(batch_size), p


def _reduced_hessians(loss, theta):
    """H and the Hᵢ restricted to the range of H (the null space is neutral for every η)."""
    H, Hi, _ = _range_reduction(loss, theta)
    return H, Hi


def _range_reduction(loss, theta):
    """(UᵀHU, UᵀHᵢU, U), U an orthonormal basis of the range of H (see :func:`_reduced_hessians`)."""
    Hi = np.asarray(loss.per_example_hessians(theta), dtype=float)
    H = Hi.mean(axis=0)
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    if w[-1] <= 0:
        raise ValueError("the loss Hessian at theta has no positive eigenvalue: no stability threshold exists")
    if w[0] < -1e-10 * w[-1]:
        raise ValueError(f"the loss Hessian at theta is not positive semi-definite (eigenvalue {w[0]:.3g}): "
                         f"theta is not a minimum")
    keep = w > 1e-10 * w[-1]
    U = V[:, keep]
    # the null space of H is neutral only if every Hᵢ vanishes there (true for PSD Hᵢ, as in least squares)
    leak = np.abs(np.einsum("ji,njk,kl->nil", V[:, ~keep], Hi, V)).max() if not keep.all() else 0.0
    if leak > 1e-10 * w[-1]:
        raise ValueError(f"a per-example Hessian acts on the null space of H (|Hᵢ| there {leak:.3g}): the "
                         f"per-example Hessians are not all positive semi-definite, and leaving that space out "
                         f"would be wrong")
    return U.T @ H @ U, np.einsum("ji,njk,kl->nil", U, Hi, U), U


def error_map(Hb, eta, beta):
    """The linear map of the SGD error e = θ − θ* for one batch Hessian H_B: I − ηH_B, or, with
    heavy-ball β, A_B = [[(1 + β)I − ηH_B, −βI], [I, 0]] on (e_t, e_{t−1})."""
    r = Hb.shape[0]
    I = np.eye(r)
    if beta == 0.0:
        return I - eta * Hb
    A = np.zeros((2 * r, 2 * r))
    A[:r, :r] = (1.0 + beta) * I - eta * Hb
    A[:r, r:] = -beta * I
    A[r:, :r] = I
    return A


class _MomentOperator:
    """η ↦ E[A_B ⊗ A_B] with the η-free part computed once.

    A_B = A₀ − η·E(H_B), E(H_B) = H_B (or [[H_B, 0], [0, 0]] with momentum), is affine in H_B,
    so E[A_B ⊗ A_B] = A ⊗ A + pη²·D with A = A₀ − ηE(H) and
    D = (1/n) Σᵢ E(Hᵢ) ⊗ E(Hᵢ) − E(H) ⊗ E(H) (the mixture identity of the module docstring).
    Building D costs n·r⁴ once; each η then costs one (m², m²) matrix, m = r or 2r.
    """

    def __init__(self, H, Hi, beta, p):
        self.H, self.beta, self.p = H, beta, p
        r = H.shape[0]
        m = r if beta == 0.0 else 2 * r
        D = np.zeros((m, m, m, m))
        if p > 0.0:  # D[a, b, c, d] = mean Hᵢ[a, c]·Hᵢ[b, d] − H[a, c]·H[b, d] on the θ block
            D[:r, :r, :r, :r] = (np.einsum("nac,nbd->abcd", Hi, Hi) / Hi.shape[0]
                                 - np.einsum("ac,bd->abcd", H, H))
        self.D = D.reshape(m * m, m * m)

    def __call__(self, eta):
        A = error_map(self.H, eta, self.beta)
        return np.kron(A, A) + (self.p * eta * eta) * self.D


def sgd_moment_operator(loss, lr, batch_size, momentum: float = 0.0, replacement: bool = False,
                        theta=None) -> np.ndarray:
    """The matrix of M ↦ E[A_B M A_Bᵀ] on vec(M) (row-major ``M.ravel()``), E[A_B ⊗ A_B].

    In the loss's own coordinates: shape (d², d²), or ((2d)², (2d)²) with momentum (state
    z = (e_t, e_{t−1})). ``theta`` is where the per-example Hessians are taken (a
    least-squares loss has the same everywhere; default its minimiser).
    """
    loss = _finite_sum(loss, "sgd_moment_operator")
    eta = positive("lr", lr)
    beta = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
    _, p = _batch(loss, batch_size, replacement)
    Hi = np.asarray(loss.per_example_hessians(_where(loss, theta)), dtype=float)
    return _MomentOperator(Hi.mean(axis=0), Hi, beta, p)(eta)


def sgd_stationary_covariance(loss, lr, batch_size, replacement: bool = False, theta=None) -> np.ndarray:
    """The stationary covariance of SGD's iterates on a least-squares finite sum, exactly (module docstring).

    SGD θ ← θ − η ĝ_B(θ), a fresh batch every step: B distinct examples drawn uniformly
    (``replacement=False``; Cov(ĝ_B) = p·C with p = (n − B)/(B(n − 1))) or B i.i.d. uniform
    draws (``replacement=True``; p = 1/B). Not epoch-wise reshuffling, which is another
    process. On least squares the map is affine in θ with random coefficients (A_B, u_B), and
    the stationary moments solve N = E[Ã_B N Ã_Bᵀ] on the augmented state (θ − θ*, 1), with
    E[Ã_B ⊗ Ã_B] from the mixture identity (exact: the batch Hessian's and batch gradient's
    randomness and their correlation are all kept). At the minimiser this is

        M = E[(I − ηH_B) M (I − ηH_B)ᵀ] + η² Σ_B(θ*),     Σ_B(θ*) = p·C(θ*),

    the equation (I − T) vec M = vec(η²Σ_B(θ*)) with T = :func:`sgd_moment_operator`. For
    η → 0 it is η·C₁ + O(η²), C₁ solving HC₁ + C₁H = Σ_B(θ*): the stationary covariance of
    the SDE in the ``"sgd"`` convention (per-step η²Σ_B; Li, Malladi & Arora, arXiv
    2102.12470); the EoS-Ada proposal's convention (per-step ηΣ_B) gives C₁, 1/η times too
    large.

    Parameters
    ----------
    loss : FiniteSumLoss with per-example gradients and Hessians (e.g.
        :class:`~eosdyn.losses.LeastSquares`; for another loss this is the linearisation of
        SGD about ``theta``).
    lr : step size η > 0, below SGD's mean-square threshold (:func:`sgd_threshold`).
    batch_size : int in [1, n] (without replacement) or >= 1 (with).
    replacement : sample the batch with replacement.
    theta : the reference point (default the loss's minimiser); for least squares the answer
        does not depend on it (the map is affine), for another loss it is where SGD is
        linearised.

    Returns
    -------
    (d, d) ndarray: Cov(θ) in the stationary law, about its mean. Directions in the null space
    of H (where every Hᵢ and every per-example gradient vanishes, e.g. over-parameterised
    regression) never move; their variance is 0 (the law started on the affine set of θ*).

    Raises ValueError when η ≥ SGD's mean-square threshold (ρ(E[A_B ⊗ A_B]) ≥ 1: no stationary
    law), or when a per-example gradient leaves the range of H (the iterates then random-walk
    along the null space); TypeError for a loss without per-example Hessians.
    """
    loss = _finite_sum(loss, "sgd_stationary_covariance")
    eta = positive("lr", lr)
    _, p = _batch(loss, batch_size, replacement)
    th = _where(loss, theta)
    Hr, Hir, U = _range_reduction(loss, th)
    G = np.asarray(loss.per_example_grads(th), dtype=float)
    Gr = G @ U
    leak = np.abs(G - Gr @ U.T).max()
    if leak > 1e-10 * max(1.0, np.abs(G).max()):
        raise ValueError(f"a per-example gradient at theta has a component {leak:.3g} outside the range of the "
                         f"Hessian: SGD random-walks along that null space and has no stationary covariance")
    r = Hr.shape[0]
    radius = _radius(_MomentOperator(Hr, Hir, 0.0, p)(eta))
    if radius >= 1.0:
        raise ValueError(f"SGD has no stationary distribution at lr = {eta:.6g} with batch_size = {batch_size}: "
                         f"ρ(E[A_B ⊗ A_B]) = {radius:.6g} >= 1; lr must be below sgd_threshold(loss, batch_size)"
                         f".threshold")
    # augmented Ẽᵢ = [[Hᵢ, gᵢ], [0, 0]]: Ã_B = I − η·Ẽ_B = [[I − ηH_B, −ηg_B], [0, 1]]
    K = r + 1
    Ei = np.zeros((Hir.shape[0], K, K))
    Ei[:, :r, :r] = Hir
    Ei[:, :r, r] = Gr
    T = _MomentOperator(Ei.mean(axis=0), Ei, 0.0, p)(eta)   # E[Ã_B ⊗ Ã_B] on row-major vec
    last = K * K - 1                                         # the (r, r) entry of N, fixed to 1
    keep = np.arange(last)
    x = np.linalg.solve(np.eye(last) - T[np.ix_(keep, keep)], T[keep, last])
    N = np.append(x, 1.0).reshape(K, K)
    N = 0.5 * (N + N.T)
    m = N[:r, r]
    C = N[:r, :r] - np.outer(m, m)
    C = U @ C @ U.T
    return 0.5 * (C + C.T)


def _where(loss, theta):
    if theta is not None:
        return loss._theta(theta)
    return getattr(loss, "minimizer", np.zeros(loss.dim))


def _radius(T) -> float:
    return float(np.abs(np.linalg.eigvals(T)).max())


@dataclass
class SGDThreshold:
    """:func:`sgd_threshold`'s answer.

    - threshold : the exact mean-square threshold η* (ρ(E[A_B ⊗ A_B]) = 1).
    - gd_threshold : full-batch GD's (or heavy-ball's) threshold 2(1 + β)/λ_max ≥ threshold.
    - wu_ma_e_sufficient : the largest η with λ_max((I − ηH)² + pη²Σ_H) ≤ 1, a lower bound on
      ``threshold`` (Wu, Ma & E 2018's sufficient condition); None with momentum.
    - wu_ma_e_necessary : min(2/a, 1/(s√p)), Wu, Ma & E's stated necessary conditions; an upper
      bound on ``threshold`` in one dimension, not a bound in general (module docstring);
      None with momentum.
    - p : the mixture's single-example probability.
    - sharpness, non_uniformity : a = λ_max(H) and s = λ_max((1/n)ΣHᵢ² − H²)^{1/2}.
    """

    threshold: float
    gd_threshold: float
    wu_ma_e_sufficient: float | None
    wu_ma_e_necessary: float | None
    p: float
    sharpness: float
    non_uniformity: float
    batch_size: int
    n_examples: int
    momentum: float
    replacement: bool

    def ratio(self) -> float:
        """threshold / gd_threshold: how far below GD's edge the noise puts SGD's."""
        return self.threshold / self.gd_threshold


def sgd_threshold(loss, batch_size, momentum: float = 0.0, replacement: bool = False, theta=None,
                  rtol: float = 1e-10) -> SGDThreshold:
    """SGD's exact mean-square linear-stability threshold on a finite-sum loss (Mulayoff & Michaeli 2024).

    The smallest η with ρ(E[A_B ⊗ A_B]) = 1 (module docstring): it is found by scanning
    (0, η_GD] on 64 points and refining the first crossing with Brent's method to ``rtol``.
    Each point is a dense eigenvalue problem of size m² (m = rank H, or 2·rank H with
    momentum), so the cost grows like m⁶: on 2 cores about 0.4 s at d = 10, 3 s at d = 20,
    and 24 s at d = 20 with momentum; beyond d ≈ 30 it is impractical.

    Parameters
    ----------
    loss : FiniteSumLoss with per-example Hessians (e.g. :class:`~eosdyn.losses.LeastSquares`).
    batch_size : int in [1, n] (without replacement) or >= 1 (with).
    momentum : heavy-ball β in [0, 1) (PyTorch's SGD momentum, dampening 0).
    replacement : sample the batch with replacement (p = 1/B) instead of without.
    theta : where the Hessians are taken; default the loss's minimiser.

    Example
    -------
    >>> from eosdyn.losses import LeastSquares
    >>> X = np.random.default_rng(0).standard_normal((8, 3))
    >>> r = sgd_threshold(LeastSquares(X, X @ np.ones(3)), batch_size=2)
    >>> r.threshold <= r.gd_threshold
    True
    """
    loss = _finite_sum(loss, "sgd_threshold")
    beta = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
    B, p = _batch(loss, batch_size, replacement)
    rtol = in_range("rtol", rtol, 1e-15, 1e-2)
    n = loss.n_examples
    H, Hi = _reduced_hessians(loss, _where(loss, theta))
    a = float(np.linalg.eigvalsh(H)[-1])
    eta_gd = 2.0 * (1.0 + beta) / a
    # ρ = 1 at η_GD at the latest (the mean's own edge)
    T = _MomentOperator(H, Hi, beta, p)
    eta_star = _first_crossing(lambda eta: _radius(T(eta)) - 1.0, eta_gd, rtol)
    nonuni = np.einsum("nij,njk->ik", Hi, Hi) / n - H @ H
    nonuni = 0.5 * (nonuni + nonuni.T)
    s = float(np.sqrt(max(np.linalg.eigvalsh(nonuni)[-1], 0.0)))
    sufficient = necessary = None
    if beta == 0.0:
        eye = np.eye(H.shape[0])
        second = lambda eta: np.linalg.eigvalsh((eye - eta * H) @ (eye - eta * H) + p * eta**2 * nonuni)[-1] - 1.0
        sufficient = _first_crossing(second, eta_gd, rtol)
        necessary = 2.0 / a if p * s == 0.0 else min(2.0 / a, 1.0 / (s * math.sqrt(p)))
    return SGDThreshold(threshold=float(eta_star), gd_threshold=eta_gd, wu_ma_e_sufficient=sufficient,
                        wu_ma_e_necessary=necessary, p=p,
                        sharpness=a, non_uniformity=s, batch_size=B, n_examples=n, momentum=beta,
                        replacement=bool(replacement))


def _first_crossing(f, eta_max, rtol) -> float:
    """The smallest η in (0, eta_max] with f(η) = 0, f < 0 below it: a 64-point scan, then Brent."""
    from scipy import optimize  # here, not at import: eosdyn.analysis stays quick to import

    lo = eta_max * 1e-6
    for eta in eta_max * np.arange(1, 65) / 64.0:
        if f(eta) >= 0.0:
            return float(optimize.brentq(f, lo, eta, rtol=rtol, xtol=1e-300))
        lo = eta
    return float(eta_max)


@dataclass
class BatchSharpness:
    """:func:`batch_sharpness`'s answer.

    - value : E_B[g_Bᵀ H_B g_B / ‖g_B‖²] (exact, or the Monte-Carlo mean).
    - ci95 : (low, high), the 95 % Student-t interval of the Monte-Carlo mean; (value, value) if exact.
    - expectation_inside : E_B[g_Bᵀ H_B g_B] / E_B[‖g_B‖²] over the same batches.
    - n_batches : batches evaluated; exact : whether every batch was enumerated.
    - rel_std_error : the Monte-Carlo standard error over |value| (0 if exact).
    - n_hvp : Hessian-vector products used (torch models: one per batch; 0 for the toy losses).
    - reached_target : whether the requested relative standard error was reached (False when
      ``max_batches`` ran out first, which also warns).
    """

    value: float
    ci95: tuple
    expectation_inside: float
    n_batches: int
    exact: bool
    rel_std_error: float
    n_hvp: int = 0
    reached_target: bool = True


def _ratios(theta, batches, Hi, G):
    num = np.empty(len(batches))
    den = np.empty(len(batches))
    # ‖g_B‖ ≤ 1e-10·‖H_B‖·(1 + ‖θ‖) counts as zero: g_B = H_Bθ − b_B carries rounding errors of
    # about eps·‖H_B‖·‖θ‖, and a ratio of such noise means nothing
    scale = 1e-10 * (1.0 + float(np.linalg.norm(theta)))
    for k, idx in enumerate(batches):
        g = G[idx].mean(axis=0)
        Hb = Hi[idx].mean(axis=0)
        gg = float(g @ g)
        if not gg > (scale * float(np.linalg.norm(Hb))) ** 2:
            raise ValueError(f"the batch {list(map(int, idx))} has a zero gradient at theta: batch sharpness "
                             f"g_BᵀH_Bg_B/‖g_B‖² is undefined there (theta is a minimum of that batch's loss)")
        num[k] = float(g @ (Hb @ g))
        den[k] = gg
    return num, den


def batch_sharpness(loss, theta, batch_size, *, exact: bool | None = None, replacement: bool = False,
                    rel_std_error: float = 0.005, min_batches: int = 10, max_batches: int = 1000,
                    max_exact: int = 20000, seed: int = 0) -> BatchSharpness:
    """Batch sharpness E_B[g_BᵀH_Bg_B/‖g_B‖²] of a finite-sum toy loss at θ (Andreyev & Beneventano 2024).

    Parameters
    ----------
    loss : FiniteSumLoss with per-example Hessians (e.g. :class:`~eosdyn.losses.LeastSquares`).
    theta : (d,) the point; g_B and H_B are the batch's gradient and Hessian there.
    batch_size : int in [1, n] (without replacement) or >= 1 (with).
    exact, replacement, rel_std_error, min_batches, max_batches, max_exact, seed : see below.

    Returns a :class:`BatchSharpness` (value, 95 % interval, the expectation-inside variant,
    the batch count).

    ``exact=None`` enumerates all C(n, B) batches when there are at most ``max_exact`` of them
    (sampling without replacement: every batch equally likely), and samples otherwise;
    ``exact=True`` insists on enumeration, ``exact=False`` samples. Sampling draws fresh
    uniform batches and stops once the standard error of the mean is below
    ``rel_std_error``·|mean|, after at least ``min_batches`` and at most ``max_batches``.
    A batch with a zero gradient raises ValueError (the ratio is undefined there).
    """
    loss = _finite_sum(loss, "batch_sharpness")
    th = loss._theta(theta)
    B, _ = _batch(loss, batch_size, replacement)
    rel = in_range("rel_std_error", rel_std_error, 0.0, 1.0, lo_open=True)
    lo_n = nonneg_int("min_batches", min_batches, minimum=2)
    hi_n = nonneg_int("max_batches", max_batches, minimum=lo_n)
    n = loss.n_examples
    count = math.comb(n, B)
    if exact is None:
        exact = not replacement and count <= max_exact
    if exact and replacement:
        raise ValueError("exact=True enumerates batches without replacement; use replacement=False")
    if exact and count > max_exact:
        raise ValueError(f"exact=True would enumerate C({n}, {B}) = {count} batches, more than "
                         f"max_exact = {max_exact}; raise max_exact or use exact=False")
    Hi = np.asarray(loss.per_example_hessians(th), dtype=float)
    G = loss.per_example_grads(th)
    if exact:
        batches = [np.array(c) for c in itertools.combinations(range(n), B)]
        num, den = _ratios(th, batches, Hi, G)
        v = float(np.mean(num / den))
        return BatchSharpness(v, (v, v), float(num.mean() / den.mean()), len(batches), True, 0.0)
    rng = np.random.default_rng(seed_value(seed))
    return adaptive_batch_mean(
        lambda k: _ratios(th, [rng.choice(n, B, replace=replacement) for _ in range(k)], Hi, G),
        rel, lo_n, hi_n)


def adaptive_batch_mean(draw, rel_std_error, min_batches, max_batches, n_hvp_per_batch=0) -> BatchSharpness:
    """Average g_BᵀH_Bg_B/‖g_B‖² over fresh batches until its standard error is ≤ rel·|mean|.

    ``draw(k)`` evaluates k fresh batches and returns the arrays (g_BᵀH_Bg_B, ‖g_B‖²). Batches
    are added in rounds that double the count (min_batches first), never past max_batches;
    the interval is the mean ± t_{0.975, m−1}·SE. The one stopping rule of the toy and torch
    batch sharpness.
    """
    from scipy import stats  # here, not at import: eosdyn.analysis stays quick to import

    num_all, den_all = [], []
    while True:
        m = len(num_all)
        take = min_batches if m == 0 else min(max(min_batches, m), max_batches - m)
        num, den = draw(take)
        num_all.extend(num)
        den_all.extend(den)
        m = len(num_all)
        r = np.asarray(num_all) / np.asarray(den_all)
        mean = float(r.mean())
        se = float(r.std(ddof=1) / math.sqrt(m))
        if se <= rel_std_error * abs(mean) or m >= max_batches:
            break
    reached = se <= rel_std_error * abs(mean)
    if not reached:
        warnings.warn(f"batch sharpness: max_batches = {max_batches} batches reached a relative standard error "
                      f"of {se / abs(mean) if mean else math.inf:.3g}, not the requested {rel_std_error:g}; "
                      f"raise max_batches (or rel_std_error)", RuntimeWarning, stacklevel=3)
    half = float(stats.t.ppf(0.975, m - 1)) * se
    return BatchSharpness(mean, (mean - half, mean + half), float(np.sum(num_all) / np.sum(den_all)), m, False,
                          se / abs(mean) if mean != 0 else math.inf, n_hvp=n_hvp_per_batch * m,
                          reached_target=reached)
