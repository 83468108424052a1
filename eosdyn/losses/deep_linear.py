r"""Deep linear network W_N ⋯ W_1 with the mean squared loss, exact gradient, Hessian and HVP.

    L(θ) = 1/(2n) Σ_{i=1}^n ‖W_N ⋯ W_1 x_i − y_i‖²  =  1/(2n) ‖X Pᵀ − Y‖_F²,   P = W_N ⋯ W_1,

with data X of shape (n, d_in), targets Y of shape (n, d_out), layer sizes
d_0 = d_in, d_1, …, d_{N-1} (the hidden widths), d_N = d_out, and W_k of shape
(d_k, d_{k-1}). The parameter vector θ stacks the layers **W_1 first**, each
flattened **row-major** (C order): θ = (vec_r W_1, vec_r W_2, …, vec_r W_N).

This is the deep linear regression model of Saxe, McClelland & Ganguli (ICLR 2014,
"Exact solutions to the nonlinear dynamics of learning in deep linear neural
networks"), a standard toy for edge-of-stability experiments.

Derivatives (analytic, no finite differences):
with A_k = W_N ⋯ W_{k+1} (A_N = I), B_k = W_{k-1} ⋯ W_1 (B_1 = I), Σ_xx = XᵀX/n,
G = ∂L/∂P = (XPᵀ − Y)ᵀ X / n,

    ∂L/∂W_k = A_kᵀ G B_kᵀ,
    ∂²L/∂W_k[a,b] ∂W_l[c,e] = (A_kᵀA_l)[a,c] (B_k Σ_xx B_lᵀ)[b,e]          (Gauss–Newton part)
                              + 1[k<l] (A_lᵀ G B_kᵀ)[c,b] (W_{l-1}⋯W_{k+1})[e,a]   (+ its transpose for k>l).

The HVP is the directional derivative of the gradient, computed in O(N) matrix
products by forward-mode recurrences on the prefix/suffix products (the Hessian is
never formed).

Minimum value. Let r = min(d_0, …, d_N) be the bottleneck width. The end-to-end
map P ranges over all d_out × d_in matrices of rank ≤ r, so (reduced-rank regression)

    L* = [ ‖Y − Ŷ‖_F² + Σ_{j>r} σ_j(Ŷ)² ] / (2n),   Ŷ = X X⁺ Y,

i.e. the least-squares residual plus the Eckart–Young tail of the fitted values.
Proof: X Pᵀ lies in col(X), so ‖Y − XPᵀ‖² = ‖Y − Ŷ‖² + ‖Ŷ − XPᵀ‖², and
‖Ŷ − XPᵀ‖² ≥ Σ_{j>r} σ_j(Ŷ)² by Eckart–Young since rank(XPᵀ) ≤ r; equality holds for
P = (X⁺ Ŷ_r)ᵀ, Ŷ_r the rank-r truncated SVD of Ŷ (whose columns lie in col(X)). When r ≥ min(d_in, d_out) the
tail is empty and L* is the ordinary least-squares optimum.
"""
from __future__ import annotations

import numbers

import numpy as np
from numba import njit

from .._arrays import put_rows
from .._validate import finite_matrix
from .finite_sum import FiniteSumLoss


# --------------------------------------------------------------------------------------
# numba kernels; params = (X (n, d_in), Y (n, d_out), dims (N+1,) as float64, Sxx (d_in, d_in))
# --------------------------------------------------------------------------------------
@njit(cache=True)
def _layers(theta, dims):
    """The weight matrices W_1..W_N (0-indexed list) as views of θ (row-major blocks)."""
    N = dims.shape[0] - 1
    Ws = []
    off = 0
    for k in range(N):
        r = int(dims[k + 1])
        c = int(dims[k])
        Ws.append(np.ascontiguousarray(theta[off:off + r * c]).reshape((r, c)))
        off += r * c
    return Ws


@njit(cache=True)
def _prefix_suffix(Ws, dims):
    """Bs[k] = W_{k-1}⋯W_0 (Bs[0] = I), As[k] = W_{N-1}⋯W_{k+1} (As[N-1] = I), 0-indexed."""
    N = len(Ws)
    Bs = [np.eye(int(dims[0]))]
    for k in range(N - 1):
        Bs.append(Ws[k] @ Bs[k])
    As = [np.eye(int(dims[N]))]  # built from the top, reversed below
    for k in range(N - 1, 0, -1):
        As.append(As[N - 1 - k] @ Ws[k])
    As.reverse()
    return As, Bs


@njit(cache=True)
def _end_to_end(Ws, Bs):
    N = len(Ws)
    return Ws[N - 1] @ Bs[N - 1]


@njit(cache=True)
def _dl_value(theta, params):
    X, Y, dims = params[0], params[1], params[2]
    Ws = _layers(theta, dims)
    N = len(Ws)
    P = Ws[0]
    for k in range(1, N):
        P = Ws[k] @ P
    R = X @ P.T - Y
    n = X.shape[0]
    return 0.5 * np.sum(R * R) / n


@njit(cache=True)
def _dl_G(X, Y, P):
    """G = ∂L/∂P = (X Pᵀ − Y)ᵀ X / n, shape (d_out, d_in)."""
    R = X @ P.T - Y
    return (R.T @ X) / X.shape[0]


@njit(cache=True)
def _dl_grad(theta, params):
    X, Y, dims = params[0], params[1], params[2]
    Ws = _layers(theta, dims)
    As, Bs = _prefix_suffix(Ws, dims)
    P = _end_to_end(Ws, Bs)
    G = _dl_G(X, Y, P)
    out = np.empty(theta.shape[0])
    off = 0
    for k in range(len(Ws)):
        off = put_rows(As[k].T @ G @ Bs[k].T, out, off)
    return out


@njit(cache=True)
def _dl_batch_value_grad(theta, params, idx, out):
    """The minibatch kernel (:mod:`eosdyn.losses.finite_sum`): out ← g_B, returns L_B, the loss and
    gradient of the same network on the rows ``idx`` of (X, Y) (a repeated index counts twice)."""
    X, Y = params[0], params[1]
    B = idx.shape[0]
    Xb = np.empty((B, X.shape[1]))
    Yb = np.empty((B, Y.shape[1]))
    for k in range(B):
        Xb[k] = X[idx[k]]
        Yb[k] = Y[idx[k]]
    pb = (Xb, Yb, params[2], params[3])
    g = _dl_grad(theta, pb)
    for j in range(out.shape[0]):
        out[j] = g[j]
    return _dl_value(theta, pb)


@njit(cache=True)
def _dl_per_example_grad(theta, params):
    """(n, d): row i is ∇ℓᵢ(θ), ℓᵢ = ½‖W_N⋯W_1 xᵢ − yᵢ‖² (their mean is ∇L)."""
    X, Y = params[0], params[1]
    n = X.shape[0]
    G = np.empty((n, theta.shape[0]))
    for i in range(n):
        pb = (X[i:i + 1].copy(), Y[i:i + 1].copy(), params[2], params[3])
        G[i] = _dl_grad(theta, pb)
    return G


@njit(cache=True)
def _dl_hess(theta, params):
    X, Y, dims, Sxx = params[0], params[1], params[2], params[3]
    Ws = _layers(theta, dims)
    N = len(Ws)
    As, Bs = _prefix_suffix(Ws, dims)
    P = _end_to_end(Ws, Bs)
    G = _dl_G(X, Y, P)
    d = theta.shape[0]
    H = np.zeros((d, d))
    offs = np.zeros(N + 1, dtype=np.int64)
    for k in range(N):
        offs[k + 1] = offs[k] + Ws[k].size
    for k in range(N):
        rk, ck = Ws[k].shape
        BS = Bs[k] @ Sxx
        # M = W_{l-1}⋯W_{k+1} (product of the layers strictly between k and l), I for l = k+1
        M = np.eye(rk)
        for l in range(k, N):
            rl, cl = Ws[l].shape
            if l > k + 1:
                M = Ws[l - 1] @ M
            AA = As[k].T @ As[l]          # (d_{k+1}, d_{l+1})  indices a, c
            BB = BS @ Bs[l].T             # (d_k, d_l)          indices b, e
            C = np.zeros((1, 1))
            if l > k:
                C = As[l].T @ G @ Bs[k].T  # (d_{l+1}, d_k)      indices c, b
            for a in range(rk):
                for b in range(ck):
                    i = offs[k] + a * ck + b
                    for c in range(rl):
                        for e in range(cl):
                            j = offs[l] + c * cl + e
                            h = AA[a, c] * BB[b, e]
                            if l > k:
                                h += C[c, b] * M[e, a]
                            H[i, j] = h
                            H[j, i] = h
    return H


@njit(cache=True)
def _dl_hvp(theta, v, params):
    X, Y, dims, Sxx = params[0], params[1], params[2], params[3]
    Ws = _layers(theta, dims)
    Vs = _layers(v, dims)
    N = len(Ws)
    As, Bs = _prefix_suffix(Ws, dims)
    P = _end_to_end(Ws, Bs)
    G = _dl_G(X, Y, P)
    # forward-mode derivatives of the prefix/suffix products in direction V
    dBs = [np.zeros_like(Bs[0])]
    for k in range(N - 1):
        dBs.append(Vs[k] @ Bs[k] + Ws[k] @ dBs[k])
    dAs_rev = [np.zeros_like(As[N - 1])]
    for k in range(N - 1, 0, -1):
        j = N - 1 - k
        dAs_rev.append(dAs_rev[j] @ Ws[k] + As[k] @ Vs[k])
    dAs_rev.reverse()
    dP = Vs[N - 1] @ Bs[N - 1] + Ws[N - 1] @ dBs[N - 1]
    dG = dP @ Sxx
    out = np.empty(theta.shape[0])
    off = 0
    for k in range(N):
        off = put_rows(dAs_rev[k].T @ G @ Bs[k].T + As[k].T @ dG @ Bs[k].T + As[k].T @ G @ dBs[k].T, out, off)
    return out


# --------------------------------------------------------------------------------------
def _check_widths(widths):
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"widths must be a list of positive integers (hidden widths), got {type(widths).__name__}")
    out = []
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral):
            raise TypeError(f"widths must contain integers, got {w!r} ({type(w).__name__})")
        if int(w) < 1:
            raise ValueError(f"widths must contain integers >= 1, got {w!r}")
        out.append(int(w))
    return out


def reduced_rank_optimum(X, Y, rank):
    """Exact optimum of min_{rank P ≤ rank} 1/(2n)‖X Pᵀ − Y‖_F² (reduced-rank regression).

    Returns ``(L_star, P_star)`` with P_star of shape (d_out, d_in): the minimum-norm
    minimiser (X⁺ Ŷ_r)ᵀ, where Ŷ = X X⁺ Y and Ŷ_r is its rank-``rank`` truncated SVD
    (Eckart & Young, Psychometrika 1936; reduced-rank regression, Izenman 1975).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = X.shape[0]
    # orthonormal basis of col(X) with a rank tolerance (as numpy's lstsq/pinv)
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    tol = s.max() * max(X.shape) * np.finfo(float).eps if s.size else 0.0
    keep = s > tol
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    Yhat = U @ (U.T @ Y)
    resid = Y - Yhat
    Uy, sy, Vty = np.linalg.svd(Yhat, full_matrices=False)
    r = min(int(rank), sy.size)
    Yr = (Uy[:, :r] * sy[:r]) @ Vty[:r]
    L_star = (np.sum(resid * resid) + np.sum(sy[r:] ** 2)) / (2.0 * n)
    Xpinv = (Vt.T / s) @ U.T          # X⁺, (d_in, n)
    P_star = (Xpinv @ Yr).T
    return float(L_star), P_star


class DeepLinear(FiniteSumLoss):
    r"""Deep linear network with mean squared loss: L(θ) = 1/(2n) Σ_i ‖W_N⋯W_1 x_i − y_i‖².

    A finite sum of the per-example losses ℓᵢ = ½‖W_N⋯W_1 xᵢ − yᵢ‖² (n = ``n_examples``): it has
    per-example gradients (:meth:`per_example_grads`, so :class:`eosdyn.sde.MinibatchNoise`
    applies) and a minibatch kernel, the same network's loss and gradient on a batch of rows,
    so :class:`eosdyn.rules.SGD` with a batch size runs on it.

    Parameters
    ----------
    X : array (n, d_in)
        Inputs, one example per row.
    Y : array (n, d_out) or (n,)
        Targets, one example per row (a 1-D Y means d_out = 1).
    widths : list of int
        Hidden widths d_1, …, d_{N-1} (may be empty: then N = 1, plain linear
        least squares). The depth is N = len(widths) + 1 layers.

    Normalisation: ½ × the *mean* over the n examples of the squared error.
    Flattening: θ = (W_1, W_2, …, W_N), each W_k (shape (d_k, d_{k-1})) row-major;
    see :meth:`unflatten` / :meth:`flatten`.

    ``min_value`` is the exact L* (reduced-rank regression closed form when a hidden
    width is below min(d_in, d_out); module docstring). :meth:`minimizer` returns a
    balanced factorisation of the optimal end-to-end map that attains it.
    Gradient, Hessian and HVP are analytic (module docstring).
    """

    name = "deep_linear"

    def __init__(self, X, Y, widths=()):
        X = finite_matrix("X", X)
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
        try:
            if np.ndim(Y) == 1:
                Y = np.reshape(Y, (-1, 1))
        except (TypeError, ValueError):
            pass  # finite_matrix reports it
        Y = finite_matrix("Y", Y, rows=X.shape[0])
        widths = _check_widths(widths)
        n, d_in = X.shape
        d_out = Y.shape[1]
        dims = [d_in] + widths + [d_out]
        self.dims = tuple(dims)
        self.depth = len(dims) - 1
        self.polynomial_degree = 2 * self.depth
        self.shapes = tuple((dims[k + 1], dims[k]) for k in range(self.depth))
        dim = sum(r * c for r, c in self.shapes)
        self.rank_bound = min(dims)
        L_star, P_star = reduced_rank_optimum(X, Y, self.rank_bound)
        Sxx = X.T @ X / n
        super().__init__(_dl_value, _dl_grad, _dl_hess, _dl_hvp,
                         (X, Y, np.asarray(dims, dtype=np.float64), Sxx), dim, L_star,
                         _dl_per_example_grad, n, batch_fn=_dl_batch_value_grad)
        self.X = self.params[0]
        self.Y = self.params[1]
        self.optimal_map = P_star

    # --- helpers ------------------------------------------------------------------
    def unflatten(self, theta):
        """θ -> [W_1, …, W_N] (copies), W_k of shape (d_k, d_{k-1})."""
        theta = self._theta(theta)
        out, off = [], 0
        for r, c in self.shapes:
            out.append(theta[off:off + r * c].reshape(r, c).copy())
            off += r * c
        return out

    def flatten(self, weights):
        """[W_1, …, W_N] -> θ (W_1 first, row-major)."""
        weights = list(weights)
        if len(weights) != self.depth:
            raise ValueError(f"weights must be a list of {self.depth} matrices, got {len(weights)}")
        parts = []
        for k, (W, shp) in enumerate(zip(weights, self.shapes)):
            W = np.asarray(W, dtype=np.float64)
            if W.shape != shp:
                raise ValueError(f"weights[{k}] must have shape {shp}, got {W.shape}")
            parts.append(W.ravel())
        return np.concatenate(parts)

    def end_to_end(self, theta) -> np.ndarray:
        """P = W_N ⋯ W_1, shape (d_out, d_in)."""
        Ws = self.unflatten(theta)
        P = Ws[0]
        for W in Ws[1:]:
            P = W @ P
        return P

    def minimizer(self) -> np.ndarray:
        """A balanced θ* with L(θ*) = L*: the optimal map P* = U S Vᵀ (rank ≤ r) factored as
        W_1 = [S^{1/N} Vᵀ; 0], W_k = diag(S^{1/N}, 0) (1 < k < N), W_N = [U S^{1/N}, 0]."""
        U, s, Vt = np.linalg.svd(self.optimal_map, full_matrices=False)
        r = self.rank_bound
        U, s, Vt = U[:, :r], s[:r], Vt[:r]
        root = s ** (1.0 / self.depth)
        Ws = []
        for k, (rows, cols) in enumerate(self.shapes):
            W = np.zeros((rows, cols))
            if self.depth == 1:
                W = self.optimal_map.copy()
            elif k == 0:
                W[:r] = root[:, None] * Vt
            elif k == self.depth - 1:
                W[:, :r] = U * root[None, :]
            else:
                W[np.arange(r), np.arange(r)] = root
            Ws.append(W)
        return self.flatten(Ws)

    def __repr__(self):
        return f"DeepLinear(dims={self.dims}, n={self.X.shape[0]}, min_value={self.min_value:.6g})"
