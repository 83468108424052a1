"""Per-trajectory random streams that numba kernels can call.

``np.random`` seeded inside a ``prange`` kernel is *not* reproducible (numba keeps
one generator per thread, and the thread that runs a trajectory varies). eosdyn
therefore gives every trajectory its own xoshiro256** generator (Blackman & Vigna,
"Scrambled linear pseudorandom number generators", 2021) whose 256-bit state is
derived from the pair ``(seed, trajectory index)`` by SplitMix64. A trajectory's
draws then depend on nothing but that pair: results are bit-identical for any
thread count, and the increments of any one trajectory can be regenerated alone.

Normals come from a 256-layer ziggurat (Marsaglia & Tsang 2000, in numpy's 52-bit form): one
64-bit draw per normal 98.8% of the time, about as fast as numpy's ``standard_normal``. They came
from the Marsaglia polar method (in pairs) before; every seeded stream of normals changed with
the switch (CHANGELOG.md). See :func:`rng_fill_normal` for the draw order.

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


def _splitmix64(x):
    """One SplitMix64 step on a uint64 array (wrapping arithmetic): (new counter, output)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x, z ^ (z >> np.uint64(31))


def rng_init_rows(seed, index0, out):
    """Row i of ``out`` (n, 4) ← the xoshiro256** state keyed on (seed, index0 + i) (mod 2⁶⁴).

    The key is mixed by SplitMix64: c = seed·0xD1342543DE82EF95 + 0x2545F4914F6CDD1D, one step
    of it gives a; c = a ⊕ (index·0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019), and four more
    steps give the state. Vectorised numpy over the rows (not a numba kernel: a new process
    would compile one before its first run)."""
    n = out.shape[0]
    with np.errstate(over="ignore"):
        c = np.full(n, seed, np.uint64) * np.uint64(0xD1342543DE82EF95) + np.uint64(0x2545F4914F6CDD1D)
        c, a = _splitmix64(c)
        index = np.uint64(index0) + np.arange(n, dtype=np.uint64)
        c = a ^ (index * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019))
        for k in range(RNG_STATE_SIZE):
            c, out[:, k] = _splitmix64(c)


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


# --- normals: a 256-layer ziggurat ---------------------------------------------------
# Marsaglia & Tsang, "The ziggurat method for generating random variables", J. Stat. Softw.
# 5(8), 2000, in the 52-bit form numpy's ``standard_normal`` uses (one 64-bit draw per normal
# 98.8% of the time). The density is cut into N = 256 pieces of equal area v under
# f(x) = exp(-x²/2): a base strip [0, r)×[0, f(r)] plus the tail x ≥ r, and 255 layers whose
# right edges x_255 = r > x_254 > … > x_1 satisfy x_{i-1} = f⁻¹(v/x_i + f(x_i)). r is the root of
# the closure condition x_1·(1 − f(x_1)) = v (the top layer has area v too), solved in 60-digit
# decimal arithmetic; the tables are computed from r in 30-digit decimal arithmetic (the
# ``decimal`` module rounds exp, ln and sqrt correctly) and rounded once to double, so they are
# the same bits on every machine.
ZIG_R = "3.6541528853610087716454297203995157629748546"
ZIG_V = "0.0049286732339746553473617754023360280691353847"


def _zig_tables():
    """(KI int64[256], WIS float64[512], FI float64[256]) of the 256-layer ziggurat.

    Layer i ≥ 1 has right edge x_i (WI[i] = x_i/2⁵², KI[i] = ⌊2⁵²·x_{i-1}/x_i⌋ so that
    rabs < KI[i] ⟺ the point lies under layer i−1's edge, i.e. surely under the curve; KI[1] = 0:
    the top layer always takes the wedge test); layer 0 is the base strip of pseudo-width
    q = v/f(r) (KI[0] = ⌊2⁵²·r/q⌋; beyond r lies the tail). FI[i] = f(x_i), FI[0] = 1.
    WIS[j] = ±WI[j & 255], minus for j ≥ 256: the sign bit indexes the table (no branch).
    """
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 30
        r, v = Decimal(ZIG_R), Decimal(ZIG_V)
        two52 = Decimal(2) ** 52

        def f(x):
            return (-(x * x) / 2).exp()

        x = [Decimal(0)] * 256
        x[255] = r
        for i in range(254, 0, -1):
            x[i] = (-2 * (v / x[i + 1] + f(x[i + 1])).ln()).sqrt()
        x[0] = v / f(r)
        ki = np.zeros(256, np.int64)
        wi = np.zeros(256, np.float64)
        fi = np.zeros(256, np.float64)
        ki[0] = int(two52 * r / x[0])
        for i in range(2, 256):
            ki[i] = int(two52 * x[i - 1] / x[i])
        for i in range(256):
            wi[i] = float(x[i] / two52)
            fi[i] = float(f(x[i])) if i > 0 else 1.0
    wis = np.concatenate([wi, -wi])
    return ki, wis, fi


_ZIG_KI, _ZIG_WIS, _ZIG_FI = _zig_tables()
_ZIG_R = float(ZIG_R)
_ZIG_INV_R = 1.0 / _ZIG_R


@njit(cache=True)
def _zig_slow(s, j, rabs, x):
    """The 1.2% of draws that miss the layers' inner rectangles: the wedge test (layers 1–255)
    or the tail (layer 0, Marsaglia's exponential method). Returns (accepted, value); extra
    uniforms come from ``s`` (whose state the caller stored there)."""
    idx = j & 0xFF
    if idx == 0:
        while True:  # tail: x = r + e₁/r accepted when 2e₂ > (e₁/r)², e₁, e₂ ~ Exp(1)
            xx = -_ZIG_INV_R * np.log1p(-rng_uniform(s))
            yy = -np.log1p(-rng_uniform(s))
            if yy + yy > xx * xx:
                return True, (_ZIG_R + xx) if j < 256 else -(_ZIG_R + xx)
    if (_ZIG_FI[idx - 1] - _ZIG_FI[idx]) * rng_uniform(s) + _ZIG_FI[idx] < np.exp(-0.5 * x * x):
        return True, x
    return False, x


@njit(cache=True)
def rng_fill_normal(s, out):
    """Fill ``out`` (float64 1-D) with standard normals from stream ``s``.

    A 256-layer ziggurat (see above): each normal takes one 64-bit draw — bits 0–7 pick the
    layer, bit 8 the sign, the top 52 bits the abscissa — plus, for the 1.2% that miss the
    layer's inner rectangle, more draws for the wedge or tail test (and a fresh try when that
    rejects). Normals come one at a time, so the stream's normals do not depend on how they are
    split into calls: the k-th normal a run draws is the k-th of
    :func:`normals` (seed, index). This is the draw order every kernel uses: the increments of a
    trajectory are reproduced exactly by drawing the same numbers of normals from the same stream.
    """
    n = out.shape[0]
    s0 = s[0]
    s1 = s[1]
    s2 = s[2]
    s3 = s[3]
    i = 0
    while i < n:
        # xoshiro256** on local state (kept in registers: ``out`` might alias ``s`` for all numba knows)
        r = _rotl(s1 * uint64(5), 7) * uint64(9)
        t = s1 << uint64(17)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        j = np.intp(r & uint64(0x1FF))
        rabs = np.int64(r >> uint64(12))
        x = float(rabs) * _ZIG_WIS[j]
        if rabs < _ZIG_KI[j & 0xFF]:
            out[i] = x
            i += 1
        else:
            s[0] = s0
            s[1] = s1
            s[2] = s2
            s[3] = s3
            ok, x = _zig_slow(s, j, rabs, x)
            s0 = s[0]
            s1 = s[1]
            s2 = s[2]
            s3 = s[3]
            if ok:
                out[i] = x
                i += 1
    s[0] = s0
    s[1] = s1
    s[2] = s2
    s[3] = s3


def stream(seed: int, index: int) -> np.ndarray:
    """A fresh generator state for trajectory ``index`` of a run seeded ``seed``."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    s = np.empty((1, RNG_STATE_SIZE), np.uint64)
    rng_init_rows(np.uint64(int(seed) & _MASK64), np.uint64(int(index) & _MASK64), s)
    return s[0]


def normals(seed: int, index: int, size) -> np.ndarray:
    """The first ``size`` standard normals of stream (seed, index), as the kernels draw them."""
    s = stream(seed, index)
    out = np.empty(int(np.prod(size)), np.float64)
    rng_fill_normal(s, out)
    return out.reshape(size)
