"""A tiny array-namespace shim: the curvature solvers run on numpy or torch vectors.

The solvers keep every length-``dim`` vector in the caller's namespace, dtype and
device (a CUDA tensor stays on the GPU; nothing is copied to the host per matvec).
They only use the operators both libraries share (``@``, ``+``, ``-``, ``*``,
slicing) plus the few functions collected here. Small projected matrices
(k×k, m×m with m the Krylov basis size) are moved to the host and solved with
numpy in float64: that costs O(m²) transfers per step, never O(dim).

Random vectors
--------------
Random vector ``index`` of a call seeded ``seed`` is drawn on the host from numpy's
PCG64 generator seeded with ``SeedSequence([seed, index])``, in float64, then cast
to the caller's dtype and moved to its device (one host→device copy per random
vector: one per Lanczos start, one per Hutchinson sample or SLQ probe). The same
seed therefore gives the same vectors on numpy, torch CPU and torch CUDA, which is
what makes results comparable across backends.

torch is never imported here: a tensor can only reach us if the caller imported it.
"""
from __future__ import annotations

import sys

import numpy as np

_DISTS = ("rademacher", "gaussian")


def _torch():
    return sys.modules.get("torch")


def is_torch(x) -> bool:
    """True when ``x`` is a torch tensor (without importing torch)."""
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


class Backend:
    """The namespace, dtype and device that every length-``dim`` vector lives in.

    Build with :meth:`infer` from example arrays (``like``, ``v0``); the default is
    numpy float64.
    """

    __slots__ = ("kind", "dtype", "device", "eps")

    def __init__(self, kind: str = "numpy", dtype=None, device=None):
        self.kind = kind
        if kind == "numpy":
            dt = np.dtype(np.float64 if dtype is None else dtype)
            if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise TypeError(f"curvature solvers need float32 or float64 arrays, got dtype {dt}")
            self.dtype = dt
            self.device = "cpu"
            self.eps = float(np.finfo(dt).eps)
        elif kind == "torch":
            torch = _torch()
            if dtype not in (torch.float32, torch.float64):
                raise TypeError(
                    f"curvature solvers need torch.float32 or torch.float64 tensors, got {dtype} "
                    "(Lanczos in half precision cannot reach a useful residual)"
                )
            self.dtype = dtype
            self.device = device
            self.eps = float(torch.finfo(dtype).eps)
        else:  # pragma: no cover - internal misuse
            raise ValueError(f"unknown backend kind {kind!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def infer(cls, *examples) -> Backend:
        """Backend of the first example that is not None (numpy float64 if none is).

        A torch tensor gives torch with its dtype and device (integer tensors give
        float64); anything else is read as a numpy array (float32 stays float32,
        every other dtype becomes float64).
        """
        for x in examples:
            if x is None:
                continue
            if isinstance(x, Backend):
                return x
            if is_torch(x):
                torch = _torch()
                dt = x.dtype if x.is_floating_point() else torch.float64
                return cls("torch", dt, x.device)
            a = np.asarray(x)
            return cls("numpy", np.float32 if a.dtype == np.float32 else np.float64)
        return cls("numpy", np.float64)

    def describe(self) -> tuple[str, str]:
        """(dtype name, device name) as plain strings, for result records."""
        if self.kind == "numpy":
            return f"numpy.{self.dtype.name}", "cpu"
        return str(self.dtype), str(self.device)

    # ------------------------------------------------------------------ arrays
    def native(self, x) -> bool:
        if self.kind == "numpy":
            return isinstance(x, np.ndarray)
        return is_torch(x)

    def zeros(self, shape):
        if self.kind == "numpy":
            return np.zeros(shape, dtype=self.dtype)
        return _torch().zeros(shape, dtype=self.dtype, device=self.device)

    def asarray(self, x, name: str = "array"):
        """``x`` in this backend's namespace, dtype and device (no copy if it already is)."""
        if self.kind == "numpy":
            if is_torch(x):
                x = x.detach().cpu().numpy()
            try:
                return np.asarray(x, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be array-like of real numbers: {exc}") from None
        torch = _torch()
        if is_torch(x):
            return x.detach().to(dtype=self.dtype, device=self.device)
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be array-like of real numbers: {exc}") from None
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def from_numpy(self, a: np.ndarray):
        """A small host array (projected matrices, coefficients) moved to this backend."""
        if self.kind == "numpy":
            return np.asarray(a, dtype=self.dtype)
        return _torch().as_tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        """float64 host copy; used only for small arrays (or explicitly by the caller)."""
        if self.kind == "numpy":
            return np.asarray(x, dtype=np.float64)
        return x.detach().to("cpu", dtype=_torch().float64).numpy()

    def all_finite(self, x) -> bool:
        if self.kind == "numpy":
            return bool(np.isfinite(x).all())
        return bool(_torch().isfinite(x).all())

    # ------------------------------------------------------------------ reductions
    def dot(self, x, y) -> float:
        if self.kind == "numpy":
            return float(np.dot(x, y))
        return float(_torch().dot(x, y))

    def norm(self, x) -> float:
        if self.kind == "numpy":
            return float(np.linalg.norm(x))
        return float(_torch().linalg.vector_norm(x))

    def row_norms(self, X) -> np.ndarray:
        """Euclidean norm of each row of a (p, n) array, on the host."""
        if self.kind == "numpy":
            return np.linalg.norm(X, axis=1).astype(np.float64)
        return self.to_numpy(_torch().linalg.vector_norm(X, dim=1))

    def fix_signs(self, X):
        """Flip rows of ``X`` so that each row's largest-magnitude entry is positive.

        Eigenvectors are defined up to sign; this makes results reproducible and
        comparable across backends. One (p,)-sized host transfer.
        """
        if X.shape[0] == 0:
            return X
        if self.kind == "numpy":
            idx = np.argmax(np.abs(X), axis=1)
            s = np.sign(X[np.arange(X.shape[0]), idx])
            s[s == 0] = 1.0
            return X * s[:, None]
        torch = _torch()
        idx = torch.argmax(torch.abs(X), dim=1)
        s = torch.sign(X.gather(1, idx[:, None]))
        s = torch.where(s == 0, torch.ones_like(s), s)
        return X * s

    # ------------------------------------------------------------------ random vectors
    def random(self, seed: int, index: int, n: int, dist: str = "gaussian"):
        """Random vector ``index`` of stream ``seed``: i.i.d. N(0,1) or ±1 entries.

        Drawn on the host with ``numpy.random.default_rng([seed, index])`` in
        float64, then cast and moved (see module docstring).
        """
        rng = np.random.default_rng([int(seed), int(index)])
        if dist == "gaussian":
            a = rng.standard_normal(n)
        elif dist == "rademacher":
            a = rng.integers(0, 2, size=n).astype(np.float64) * 2.0 - 1.0
        else:  # pragma: no cover - validated by callers
            raise ValueError(f"dist must be one of {list(_DISTS)}, got {dist!r}")
        return self.from_numpy(a)

    def __repr__(self):
        d, dev = self.describe()
        return f"Backend({d}, {dev})"
