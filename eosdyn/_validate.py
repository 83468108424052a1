"""Input checks shared by every public entry point: one message style, one place."""
from __future__ import annotations

import numbers

import numpy as np


def positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float, raising if it is not a finite number > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    ok = v >= 0 if allow_zero else v > 0
    if not np.isfinite(v) or not ok:
        rng = "[0, inf)" if allow_zero else "(0, inf)"
        raise ValueError(f"{name} must be finite and in {rng}, got {value!r}")
    return v


def in_range(name: str, value, lo: float, hi: float, *, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    bad = (not np.isfinite(v)) or (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi)
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value!r}")
    return v


def nonneg_int(name: str, value, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def _float_copy(name: str, value) -> np.ndarray:
    """A float64 copy of ``value`` (TypeError for None, strings, complex numbers, ragged lists)."""
    if value is None:
        raise TypeError(f"{name} must be array-like of real numbers, got None")
    try:
        raw = np.asarray(value)
        complex_input = np.iscomplexobj(raw)
        out = None if complex_input else np.array(raw, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:  # ragged lists, strings
        raise TypeError(f"{name} must be array-like of real numbers: {exc}") from None
    if complex_input:
        raise TypeError(f"{name} must be real: a complex value's imaginary part would be dropped")
    return out


def _finite(name: str, a: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return np.ascontiguousarray(a)


#: the most steps a run may have: the kernels count steps (and step + 1) in int64
MAX_STEPS = 2 ** 62


def step_count(name: str, value) -> int:
    """An integer number of steps in [0, MAX_STEPS = 2**62] (the kernels count in int64)."""
    v = nonneg_int(name, value)
    if v > MAX_STEPS:
        raise ValueError(f"{name} must be an integer in [0, 2**62], got {value!r}")
    return v


def seed_value(value, name: str = "seed") -> int:
    """A seed or stream index: an integer in [0, 2**63)."""
    v = nonneg_int(name, value)
    if v >= 2 ** 63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")
    return v


def finite_vector(name: str, value, dim: int | None = None) -> np.ndarray:
    """A contiguous float64 1-D copy of ``value``; checks finiteness and length."""
    a = _float_copy(name, value)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if dim is not None and a.shape[0] != dim:
        raise ValueError(f"{name} must have length loss.dim = {dim}, got {a.shape[0]}")
    return _finite(name, a)


def finite_matrix(name: str, value, dim: int | None = None, *, rows: int | None = None) -> np.ndarray:
    """A contiguous float64 2-D copy of ``value`` of shape (rows, dim)."""
    a = _float_copy(name, value)
    if a.ndim == 1 and dim is not None and a.shape[0] == dim:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}) to match loss.dim, got {a.shape}")
    if rows is not None and a.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows, got {a.shape[0]}")
    return _finite(name, a)


def symmetric(name: str, value, *, rtol: float = 1e-10) -> np.ndarray:
    """A real, finite, non-empty, symmetric square matrix (symmetrised exactly); TypeError for
    complex or non-numeric input, ValueError otherwise, naming ``name``."""
    a = _float_copy(name, value)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"{name} must be a square matrix with at least one row, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    scale = max(np.abs(a).max(), 1.0)
    if np.abs(a - a.T).max() > rtol * scale:
        raise ValueError(f"{name} must be symmetric (max |{name} - {name}.T| = {np.abs(a - a.T).max():.3g})")
    return np.ascontiguousarray(0.5 * (a + a.T))


def pair(name: str, value) -> tuple:
    """A pair (a, b) of real numbers from any 2-element sequence (TypeError/ValueError naming ``name``)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{name} must be a pair of numbers such as (0.9, 0.999), got {value!r}")
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair of numbers (two entries), got {len(value)}: {value!r}")
    return value[0], value[1]


def choice(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value
