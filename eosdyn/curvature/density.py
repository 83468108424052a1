"""Spectral density by stochastic Lanczos quadrature (SLQ).

The spectral measure of a symmetric A ∈ R^{d×d} is μ = (1/d) Σ_i δ(λ_i). For a unit
probe v, vᵀ f(A) v = Σ_i (vᵀu_i)² f(λ_i) is an integral against the measure
μ_v = Σ_i (vᵀu_i)² δ(λ_i), and E[μ_v] = μ for v uniform on the sphere (Gaussian
probe normalised) or a normalised Rademacher probe. m steps of Lanczos from v give
the Gauss quadrature rule of μ_v: nodes θ_l = eigenvalues of the m×m tridiagonal
T_m, weights τ_l = (e_1ᵀ y_l)², exact for polynomials of degree ≤ 2m − 1
(Golub & Meurant, *Matrices, Moments and Quadrature*, 2010, Thm. 6.2;
Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017, eq. 3.3).

Averaging over probes and smoothing each node with a Gaussian kernel of width σ
gives the density (Ghorbani, Krishnan & Xiao, "An investigation into neural net
optimization via Hessian eigenvalue density", ICML 2019, §2.2, eq. 6):

    φ_σ(t) = (1/n_v) Σ_probes Σ_l τ_l g_σ(t − θ_l),   g_σ(x) = exp(−x²/2σ²)/(σ√(2π)),

which integrates to 1 over R because Σ_l τ_l = ‖v‖² = 1 for each probe.
Lanczos runs with full reorthogonalisation (CGS2), as Ghorbani et al. recommend.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import choice, nonneg_int, positive
from ._krylov import expand, is_breakdown, symmetric_part
from ._xp import _DISTS, Backend
from .operators import as_operator, check_symmetric


@dataclass
class SpectralDensity:
    """SLQ quadrature rules and the smoothed density.

    Attributes
    ----------
    nodes, weights : ndarray (n_probes, n_steps)
        Gauss quadrature rule of each probe's measure. A probe whose Krylov space
        became invariant before ``n_steps`` (exact rule) is padded with weight 0
        (``n_nodes`` records the real count). Each row of weights sums to 1.
    n_nodes : ndarray (n_probes,) of int
    grid : ndarray (n_grid,)
    density : ndarray (n_grid,)
        φ_σ on ``grid``; ∫φ_σ = 1 when the grid covers the nodes ± several σ.
    sigma : float
    n_matvecs : int
    dim : int
    dist : str
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_nodes: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    n_matvecs: int
    dim: int
    dist: str

    def probe_integrals(self, f=None) -> np.ndarray:
        """Σ_l τ_l f(θ_l) for each probe (f = identity by default): vᵀ f(A) v."""
        vals = self.nodes if f is None else f(self.nodes)
        return np.sum(self.weights * vals, axis=1)

    def integrate(self, f=None) -> float:
        """∫ f dμ ≈ tr f(A) / dim, the mean of :meth:`probe_integrals`."""
        return float(self.probe_integrals(f).mean())

    def trace_estimate(self, f=None) -> float:
        """dim · ∫ f dμ ≈ tr f(A) (tr A by default)."""
        return self.dim * self.integrate(f)

    def evaluate(self, t, sigma=None) -> np.ndarray:
        """φ_σ at points ``t`` (σ = self.sigma unless given)."""
        return _smooth(self.nodes, self.weights, np.asarray(t, dtype=np.float64),
                       self.sigma if sigma is None else positive("sigma", sigma))


def _smooth(nodes, weights, t, sigma):
    th = nodes.ravel()
    w = weights.ravel() / nodes.shape[0]
    keep = w > 0
    th, w = th[keep], w[keep]
    flat = t.ravel()
    out = np.empty(flat.shape[0])
    c = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
    step = max(1, 2_000_000 // max(1, th.shape[0]))
    for s in range(0, flat.shape[0], step):
        z = (flat[s:s + step, None] - th[None, :]) / sigma
        out[s:s + step] = c * (np.exp(-0.5 * z * z) @ w)
    return out.reshape(t.shape)


def spectral_density(
    matvec,
    dim,
    n_probes=10,
    n_steps=80,
    grid=None,
    sigma=None,
    seed=0,
    *,
    dist="rademacher",
    like=None,
    n_grid=1001,
    check_symmetry=False,
) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Parameters
    ----------
    matvec : callable or square matrix
        ``v -> A v``, A symmetric.
    dim : int
    n_probes : int >= 1
        Number of random probes (each costs up to ``n_steps`` matvecs).
    n_steps : int >= 1
        Lanczos steps per probe = quadrature nodes per probe (capped at dim).
    grid : 1-D array, optional
        Points where φ_σ is evaluated. Default: ``n_grid`` points spanning
        [min node − 6σ, max node + 6σ].
    sigma : float, optional
        Gaussian kernel width; default 1 % of the node spread (Ghorbani et al.
        use σ² = 1e-5 on the spectrum rescaled to [−1, 1], i.e. 0.16 % of it).
    seed : int
        Probe i is vector i of stream ``seed``.
    dist : {"rademacher", "gaussian"}
        Probe distribution (normalised to unit length).
    like : array, optional
        Example array fixing namespace, dtype and device.
    n_grid : int
    check_symmetry : bool
        Run :func:`check_symmetric` first (2 matvecs, counted).

    Returns
    -------
    SpectralDensity
    """
    dist = choice("dist", dist, _DISTS)
    bk = Backend.infer(like)
    op = as_operator(matvec, dim, bk)
    n = op.dim
    n_probes = nonneg_int("n_probes", n_probes, minimum=1)
    n_steps = nonneg_int("n_steps", n_steps, minimum=1)
    n_grid = nonneg_int("n_grid", n_grid, minimum=2)
    seed = nonneg_int("seed", seed)
    if sigma is not None:
        sigma = positive("sigma", sigma)
    if grid is not None:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.shape[0] < 1 or not np.all(np.isfinite(grid)):
            raise ValueError(f"grid must be a finite 1-D array, got shape {grid.shape}")
    if check_symmetry:
        check_symmetric(op, n, seed=seed, like=bk)

    m = min(n_steps, n)
    nodes = np.zeros((n_probes, m))
    weights = np.zeros((n_probes, m))
    n_nodes = np.zeros(n_probes, dtype=np.int64)
    V = bk.zeros((m + 1, n))
    for p in range(n_probes):
        Hbar = np.zeros((m + 1, m))
        v = bk.random(seed, p, n, dist)
        V[0] = v / bk.norm(v)
        j = 0
        while j < m:
            w, beta, wn = expand(op, bk, V, Hbar, j)
            j += 1
            if j == n or is_breakdown(beta, wn, Hbar, j, bk.eps):
                break  # invariant Krylov space: the quadrature rule is exact
            if j < m:
                V[j] = w / beta
                Hbar[j, j - 1] = beta
        theta, Y = np.linalg.eigh(symmetric_part(Hbar[:j, :j]))
        tau = Y[0, :] ** 2
        nodes[p, :j] = theta
        nodes[p, j:] = theta[-1]
        weights[p, :j] = tau / tau.sum()
        n_nodes[p] = j

    real = weights > 0
    lo, hi = float(nodes[real].min()), float(nodes[real].max())
    if sigma is None:
        spread = hi - lo
        sigma = 0.01 * spread if spread > 0 else 0.01 * max(abs(hi), 1.0)
    if grid is None:
        grid = np.linspace(lo - 6.0 * sigma, hi + 6.0 * sigma, n_grid)
    density = _smooth(nodes, weights, grid, sigma)
    return SpectralDensity(nodes, weights, n_nodes, grid, density, float(sigma), op.n, n, dist)
