"""Small array helpers for numba kernels.

A slice assignment of an array (``dst[:, :] = src``, ``Q[j] = q``) makes numba compile its
shape-checked copy, whose error message is built from string code: seconds of a cold start
per kernel that uses one. These loops do the same copy and compile in milliseconds.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True)
def copy_matrix(src, dst):
    """dst[i, j] ← src[i, j] for every entry of ``src`` (dst at least as large)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]
