"""Array copies for numba kernels, written as loops (the engine's kernels and the losses use them).

A slice assignment of an array (``dst[:, :] = src``, ``out[a:b] = M.ravel()``, ``Q[j] = q``)
makes numba compile its shape-checked copy, whose error message is built from string code:
seconds of a cold start per kernel that uses one. These loops do the same copies and compile
in milliseconds.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True)
def copy_matrix(src, dst):
    """dst[i, j] ← src[i, j] for every entry of ``src`` (dst at least as large)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


@njit(cache=True)
def put_rows(M, out, off):
    """out[off : off + M.size] ← M row by row (a flat copy of a matrix); returns off + M.size."""
    for a in range(M.shape[0]):
        for b in range(M.shape[1]):
            out[off] = M[a, b]
            off += 1
    return off
