"""Per-trajectory random streams that numba kernels can call.

``np.random`` seeded inside a ``prange`` kernel is *not* reproducible (numba keeps
one generator per thread, and the thread that runs a trajectory varies). eosdyn
therefore gives every trajectory its own xoshiro256** generator (Blackman & Vigna,
"Scrambled linear pseudorandom number generators", 2021) whose 256-bit state is
derived from the pair ``(seed, trajectory index)`` by SplitMix64. A trajectory's
draws then depend on nothing but that pair: results are bit-identical for any
thread count, and the increments of any one trajectory can be regenerated alone.

Normals come from the Marsaglia polar method, which needs no sin/cos and yields
two normals per accepted pair (see :func:`rng_fill_normal` for the draw order).

State layout: ``uint64[4]``, the xoshiro256** state.
"""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

RNG_STATE_SIZE = 4
_MASK64 = 0xFFFFFFFFFFFFFFFF


@njit(cache=True, inline="always")
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(cache=True)
def _splitmix64(x):
    """One SplitMix64 step: returns (new counter, output)."""
    x = x + uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return x, z ^ (z >> uint64(31))


@njit(cache=True)
def rng_init(seed, index, out):
    """Fill ``out`` (uint64[4]) with the stream keyed on (seed, index)."""
    c = uint64(seed) * uint64(0xD1342543DE82EF95) + uint64(0x2545F4914F6CDD1D)
    c, a = _splitmix64(c)
    c = a ^ (uint64(index) * uint64(0x9E3779B97F4A7C15) + uint64(0x632BE59BD9B4E019))
    for i in range(4):
        c, out[i] = _splitmix64(c)


@njit(cache=True, inline="always")
def rng_next(s):
    """Next raw 64-bit output of xoshiro256**."""
    result = _rotl(s[1] * uint64(5), 7) * uint64(9)
    t = s[1] << uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(cache=True, inline="always")
def rng_uniform(s):
    """Uniform double in [0, 1) from the top 53 bits."""
    return float(rng_next(s) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def _polar_pair(s):
    """Two independent standard normals by the Marsaglia polar method."""
    while True:
        u = 2.0 * rng_uniform(s) - 1.0
        v = 2.0 * rng_uniform(s) - 1.0
        q = u * u + v * v
        if 0.0 < q < 1.0:
            f = np.sqrt(-2.0 * np.log(q) / q)
            return u * f, v * f


@njit(cache=True)
def rng_fill_normal(s, out):
    """Fill ``out`` (float64 1-D) with standard normals from stream ``s``.

    Normals are produced in pairs; for odd lengths the last pair's second value is
    discarded, so a call always consumes a whole number of pairs. This is the
    draw order every kernel uses: the increments of a trajectory are reproduced
    exactly by calling this with the same stream and the same lengths.
    """
    n = out.shape[0]
    i = 0
    while i + 1 < n:
        a, b = _polar_pair(s)
        out[i] = a
        out[i + 1] = b
        i += 2
    if i < n:
        a, _ = _polar_pair(s)
        out[i] = a


@njit(cache=True)
def rng_init_rows(seed, index0, out):
    """Row i of ``out`` (n, 4) ← the stream keyed on (seed, index0 + i)."""
    for i in range(out.shape[0]):
        rng_init(seed, index0 + np.uint64(i), out[i])


def stream(seed: int, index: int) -> np.ndarray:
    """A fresh generator state for trajectory ``index`` of a run seeded ``seed``."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    s = np.empty(RNG_STATE_SIZE, np.uint64)
    rng_init(np.uint64(int(seed) & _MASK64), np.uint64(int(index) & _MASK64), s)
    return s


def normals(seed: int, index: int, size) -> np.ndarray:
    """The first ``size`` standard normals of stream (seed, index), as the kernels draw them."""
    s = stream(seed, index)
    out = np.empty(int(np.prod(size)), np.float64)
    rng_fill_normal(s, out)
    return out.reshape(size)
