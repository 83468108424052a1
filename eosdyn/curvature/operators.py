"""Symmetric operators given by a matrix-vector product, and checks on them.

Every curvature routine takes ``matvec``: a callable ``v -> A v`` on length-``dim``
vectors of one namespace (numpy arrays, or torch tensors on some device), with A
symmetric. A dense matrix is accepted too and is wrapped by :func:`dense_operator`.
:func:`preconditioned` turns the matvec of H into that of P^(-1/2) H P^(-1/2), whose
eigenvalues are those of P⁻¹H (the preconditioned sharpness).
"""
from __future__ import annotations

import numpy as np

from .._validate import finite_vector, nonneg_int, positive
from ._xp import Backend, _torch, is_torch


class DenseOperator:
    """``v -> A v`` for a dense square matrix ``A`` (numpy array or torch tensor).

    Called with a numpy vector it multiplies by the numpy matrix; called with a
    torch tensor it multiplies by a torch copy of ``A`` in that tensor's dtype and
    device (made once per dtype/device and cached), so one operator serves both
    namespaces without a host round trip per product.

    Attributes: ``matrix`` (the matrix as given, numpy float64 or a torch tensor),
    ``dim``, ``shape``.
    """

    def __init__(self, A):
        if is_torch(A):
            if A.ndim != 2 or A.shape[0] != A.shape[1]:
                raise ValueError(f"A must be a square matrix, got shape {tuple(A.shape)}")
            if not bool(_torch().isfinite(A).all()):
                raise ValueError("A must be finite (no NaN or inf)")
            self.matrix = A.detach()
        else:
            try:
                a = np.array(A, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"A must be a real matrix: {exc}") from None
            if a.ndim != 2 or a.shape[0] != a.shape[1]:
                raise ValueError(f"A must be a square matrix, got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError("A must be finite (no NaN or inf)")
            self.matrix = a
        self.dim = int(self.matrix.shape[0])
        self.shape = (self.dim, self.dim)
        self._cache: dict = {}

    def _torch_matrix(self, v):
        key = (v.dtype, v.device)
        M = self._cache.get(key)
        if M is None:
            M = Backend("torch", v.dtype, v.device).asarray(self.matrix, "A")
            self._cache[key] = M
        return M

    def __call__(self, v):
        if is_torch(v):
            return self._torch_matrix(v) @ v
        if is_torch(self.matrix):
            raise TypeError("this operator wraps a torch matrix: call it with torch tensors")
        return self.matrix @ v

    def __repr__(self):
        return f"DenseOperator(dim={self.dim})"


def hessian_operator(loss, theta):
    """The matvec ``v -> ∇²L(θ) v`` of an eosdyn :class:`~eosdyn.losses.base.Loss`.

    Calls the loss's numba ``hvp_fn(theta, v, params)`` kernel on numpy float64
    vectors (θ is checked and copied once). The returned callable has ``.dim``.
    """
    for attr in ("hvp_fn", "params", "dim"):
        if not hasattr(loss, attr):
            raise TypeError(f"loss must be an eosdyn Loss (missing .{attr}), got {type(loss).__name__}")
    th = finite_vector("theta", theta, loss.dim)
    hvp, params = loss.hvp_fn, loss.params

    def matvec(v):
        return hvp(th, np.ascontiguousarray(v, dtype=np.float64), params)

    matvec.dim = int(loss.dim)
    return matvec


class PreconditionedOperator:
    """``v -> P^(-1/2) H P^(-1/2) v`` for a symmetric matvec H and a diagonal P > 0.

    Built by :func:`preconditioned` (see there for the mathematics). The scaling
    s = P^(-1/2) is computed once per namespace, dtype and device the operator is
    called in (from P cast to that dtype, so float64 vectors get a float64 s), and
    cached, as :class:`DenseOperator` does with its matrix.

    Attributes: ``matvec`` (H), ``P`` (the diagonal as given: numpy float64 or a
    torch tensor), ``dim`` (= len(P)), ``shape``.
    """

    def __init__(self, matvec, P):
        matvec = callable_or_dense(matvec)
        self.P = positive_diagonal("P", P, getattr(matvec, "dim", None))
        self.matvec = matvec
        self.dim = int(self.P.shape[0])
        self.shape = (self.dim, self.dim)
        self._scales: dict = {}

    def _scale(self, v):
        """s = P^(-1/2) in ``v``'s namespace, dtype and device (cached)."""
        key = (v.dtype, v.device) if is_torch(v) else v.dtype
        s = self._scales.get(key)
        if s is None:
            if is_torch(v):
                s = _torch().rsqrt(Backend("torch", v.dtype, v.device).asarray(self.P, "P"))
            else:
                s = (1.0 / np.sqrt(Backend("numpy").asarray(self.P, "P"))).astype(v.dtype, copy=False)
            self._scales[key] = s
        return s

    def __call__(self, v):
        if not is_torch(v):
            v = np.asarray(v)
            if not np.issubdtype(v.dtype, np.floating):
                v = v.astype(np.float64)
        if tuple(v.shape) != (self.dim,):
            raise ValueError(f"v must be a vector of length dim = len(P) = {self.dim}, got shape "
                             f"{tuple(v.shape)}")
        s = self._scale(v)
        Hv = self.matvec(s * v)
        if not is_torch(Hv):
            Hv = np.asarray(Hv)
        if tuple(Hv.shape) != (self.dim,):
            if int(np.prod(tuple(Hv.shape))) != self.dim:
                raise ValueError(f"matvec must return a vector of length dim = {self.dim}, got shape "
                                 f"{tuple(Hv.shape)}")
            Hv = Hv.reshape(self.dim)
        return s * Hv

    def __repr__(self):
        return f"PreconditionedOperator(dim={self.dim})"


def positive_diagonal(name: str, P, dim: int | None = None):
    """``P`` checked as the diagonal of a positive-definite preconditioner.

    A 1-D numpy array or torch tensor (array-likes become numpy float64; a torch
    tensor keeps its dtype and device, integer tensors become float64) of length
    ``dim`` when given, every entry finite and > 0. Returns it. Raises TypeError for
    a complex or non-numeric P, ValueError otherwise, naming ``name``.
    """
    if is_torch(P):
        torch = _torch()
        if P.is_complex():
            raise TypeError(f"{name} must be real, got dtype {P.dtype}")
        P = P.detach() if P.is_floating_point() else P.detach().to(torch.float64)
        isfinite = torch.isfinite
    else:
        if np.iscomplexobj(P):
            raise TypeError(f"{name} must be real, got a complex array")
        try:
            P = np.array(P, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a 1-D array of positive numbers: {exc}") from None
        isfinite = np.isfinite
    if P.ndim != 1 or P.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (the diagonal of P), got shape "
                         f"{tuple(P.shape)}")
    if dim is not None and P.shape[0] != dim:
        raise ValueError(f"{name} must have one entry per dimension of the operator, length {dim}, "
                         f"got length {P.shape[0]}")
    n_bad = int((~isfinite(P)).sum())
    if n_bad:
        raise ValueError(f"{name} must be finite and > 0 elementwise, got {n_bad} NaN or infinite entries")
    lowest = float(P.min())
    if lowest <= 0:
        raise ValueError(f"{name} must be > 0 elementwise (every entry in (0, inf)), got min {name} = "
                         f"{lowest!r}: a zero in {name} would make λ_max(P⁻¹H) undefined (and a "
                         f"negative entry P^(-1/2) imaginary)")
    return P


def preconditioned(matvec, P) -> PreconditionedOperator:
    r"""The symmetric matvec ``v -> P^(-1/2) H P^(-1/2) v`` of a diagonally preconditioned H.

    A preconditioned rule steps θ ← θ − η P⁻¹ m with a diagonal P > 0 (Adam:
    P = diag(√v̂ + ε); RMSProp likewise; GD and heavy-ball: P = I). Its linear
    stability is governed by the spectrum of P⁻¹H instead of H: Cohen et al. 2022,
    "Adaptive gradient methods at the edge of stability" (arXiv:2207.14484, §3), show
    that during full-batch Adam the *preconditioned sharpness* λ_max(P⁻¹H) rises to and
    hovers at Adam's threshold (2 + 2β₁)/((1 − β₁)η). P⁻¹H is not symmetric, but it is
    similar to

        A = P^(-1/2) H P^(-1/2),   P⁻¹H = P^(-1/2) A P^(1/2),

    which is symmetric when H is. So A and P⁻¹H have the same (real) eigenvalues,
    λ_max(A) = λ_max(P⁻¹H), and every symmetric solver of :mod:`eosdyn.curvature`
    (Lanczos, power, exact) runs on A. An eigenvector u of A gives the eigenvector
    P^(-1/2) u of P⁻¹H.

    Parameters
    ----------
    matvec : callable or square matrix
        ``v -> H v`` with H symmetric, on numpy arrays or torch tensors (a dense
        matrix is wrapped by :func:`dense_operator`). Its ``dim`` attribute, where it
        has one (:func:`dense_operator`, :func:`hessian_operator`,
        :class:`eosdyn.bridge.HessianOperator`), is checked against len(P).
    P : 1-D numpy array or torch tensor, every entry finite and > 0
        The diagonal of P. A zero would make λ_max(P⁻¹H) undefined; it is refused.

    Returns
    -------
    PreconditionedOperator
        A callable ``v -> P^(-1/2) H P^(-1/2) v`` with ``.dim = len(P)``, usable as
        the ``matvec`` of :func:`top_eigenpairs`, :func:`hutchinson_trace`,
        :func:`spectral_density`. It works in the namespace, dtype and device of the
        vector it is given (P^(-1/2) is converted once and cached), so a numpy P
        serves torch vectors and the reverse. Each call is one product with H.

    Raises
    ------
    ValueError
        P not 1-D, of the wrong length, not finite, or not > 0 elementwise; or a
        vector of the wrong length.
    TypeError
        ``matvec`` neither callable nor a matrix; P complex or not numeric.

    Example
    -------
    ::

        op = preconditioned(hessian_operator(loss, theta), P)
        lam = top_eigenpairs(op, op.dim).eigenvalue          # λ_max(P⁻¹H)
    """
    return PreconditionedOperator(matvec, P)


def dense_operator(A) -> DenseOperator:
    """A matvec ``v -> A v`` for a dense square matrix (numpy array-like or torch tensor).

    Raises ValueError for a matrix that is not square or not finite. Symmetry is not
    required here (use :func:`check_symmetric` where it is).
    """
    return DenseOperator(A)


class CountedOperator:
    """Wraps a user matvec: counts products and checks what comes back.

    Each call checks that the result is in the solver's namespace (a torch tensor
    for torch input: a numpy result would mean a host round trip per product, so it
    is an error rather than silently converted), detaches it, casts a differing
    float dtype, and flattens a result of ``dim`` elements. Cost O(1) per call:
    no data leaves the device.
    """

    def __init__(self, fn, dim: int, backend: Backend):
        self.fn = fn
        self.dim = dim
        self.bk = backend
        self.n = 0

    def __call__(self, v):
        out = self.fn(v)
        self.n += 1
        bk = self.bk
        if bk.kind == "torch":
            if not is_torch(out):
                raise TypeError(
                    f"matvec must return a torch tensor for torch input, got {type(out).__name__}"
                )
            out = out.detach()
            if out.dtype != bk.dtype:
                out = out.to(bk.dtype)
        else:
            if is_torch(out):
                raise TypeError("matvec returned a torch tensor for numpy input; pass like=<tensor> "
                                "or a tensor v0 to run the solver in torch")
            out = np.asarray(out, dtype=bk.dtype)
        if tuple(out.shape) != (self.dim,):
            size = int(np.prod(tuple(out.shape)))
            if size != self.dim:
                raise ValueError(
                    f"matvec must return a vector of length dim = {self.dim}, got shape {tuple(out.shape)}"
                )
            out = out.reshape(self.dim)
        return out


def callable_or_dense(matvec):
    """``matvec`` if it is callable, a :class:`DenseOperator` if it is a square matrix; else TypeError."""
    if callable(matvec):
        return matvec
    if is_torch(matvec) or isinstance(matvec, (np.ndarray, list, tuple)):
        return dense_operator(matvec)
    raise TypeError(f"matvec must be a callable v -> A v or a square matrix, got {type(matvec).__name__}")


def as_operator(matvec, dim, backend: Backend) -> CountedOperator:
    """Validate (matvec, dim) and wrap them; a dense matrix becomes a DenseOperator."""
    dim = nonneg_int("dim", dim, minimum=1)
    what = "operator's" if callable(matvec) else "matrix"
    matvec = callable_or_dense(matvec)
    if isinstance(matvec, (DenseOperator, PreconditionedOperator)) and matvec.dim != dim:
        raise ValueError(f"dim must match the {what} size {matvec.dim}, got dim = {dim}")
    return CountedOperator(matvec, dim, backend)


def default_rtol(backend: Backend) -> float:
    """Symmetry tolerance: 1e-8 in float64, 1e-4 in float32."""
    return 1e-8 if backend.eps < 1e-10 else 1e-4


def check_symmetric(matvec, dim, n_pairs: int = 2, rtol=None, seed: int = 0, *, like=None) -> float:
    """Check that ``matvec`` is symmetric: uᵀ(A v) = vᵀ(A u) on random u, v.

    For ``n_pairs`` independent Gaussian pairs (u, v) (2·n_pairs matvecs) computes
    the relative asymmetry

        |uᵀAv − vᵀAu| / (½(‖u‖‖Av‖ + ‖v‖‖Au‖))

    which is 0 up to rounding for a symmetric A and O(‖A − Aᵀ‖/‖A‖) otherwise.

    Parameters
    ----------
    matvec : callable or square matrix
    dim : int
    n_pairs : int >= 1
    rtol : float, optional
        Largest accepted asymmetry; default 1e-8 for float64, 1e-4 for float32.
    seed : int
        Vectors 2i, 2i+1 of the stream ``seed`` (see ``eosdyn.curvature._xp``).
    like : array, optional
        Example array giving namespace/dtype/device (default numpy float64).

    Returns
    -------
    float
        The largest relative asymmetry measured.

    Raises
    ------
    ValueError
        If the asymmetry exceeds ``rtol`` (the operator is not symmetric).
    """
    bk = Backend.infer(like)
    op = as_operator(matvec, dim, bk)
    n_pairs = nonneg_int("n_pairs", n_pairs, minimum=1)
    seed = nonneg_int("seed", seed)
    rtol = default_rtol(bk) if rtol is None else positive("rtol", rtol)
    worst = 0.0
    for i in range(n_pairs):
        u = bk.random(seed, 2 * i, op.dim, "gaussian")
        v = bk.random(seed, 2 * i + 1, op.dim, "gaussian")
        Au, Av = op(u), op(v)
        a, b = bk.dot(u, Av), bk.dot(v, Au)
        scale = 0.5 * (bk.norm(u) * bk.norm(Av) + bk.norm(v) * bk.norm(Au))
        if not (np.isfinite(a) and np.isfinite(b)):
            raise ValueError("matvec returned non-finite values")
        rel = 0.0 if a == b else abs(a - b) / scale
        worst = max(worst, rel)
    if worst > rtol:
        raise ValueError(
            f"matvec must be a symmetric operator: relative asymmetry |uᵀAv − vᵀAu| = {worst:.3g} "
            f"exceeds rtol = {rtol:g}"
        )
    return worst

