"""Micro-benchmark: nanoseconds per standard normal (issue 16).

Compared, each filling a float64 buffer from one stream:

- eosdyn's sampler (:func:`eosdyn._rng.rng_fill_normal`, a 256-layer ziggurat on xoshiro256**);
- the Marsaglia polar method eosdyn used before (a copy here, on the same xoshiro256** stream);
- numpy's ``Generator(PCG64).standard_normal(out=...)`` (also a ziggurat);
- xoshiro256** raw 64-bit draws alone (the floor of any sampler on that stream).

Each is timed for one call of 10⁶ normals and, as the kernels draw them, for calls of length
d (one per step) at d = 1, 10, 100 — the per-call overhead matters at small d. Times are the
best of ``--repeats``; wall and CPU (process_time) are both shown (the machine may be shared).

Usage: ``python benchmarks/normals.py [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from eosdyn._rng import rng_fill_normal, rng_next, rng_uniform, stream


@njit(cache=True, inline="always")
def _polar_pair(s):
    while True:
        u = 2.0 * rng_uniform(s) - 1.0
        v = 2.0 * rng_uniform(s) - 1.0
        q = u * u + v * v
        if 0.0 < q < 1.0:
            f = np.sqrt(-2.0 * np.log(q) / q)
            return u * f, v * f


@njit(cache=True)
def polar_fill(s, out):
    """The pre-ziggurat eosdyn sampler (pairs; an odd length discards the last pair's second)."""
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
def raw_fill(s, out):
    for i in range(out.shape[0]):
        out[i] = float(rng_next(s) >> np.uint64(11))


@njit  # takes a function: numba cannot cache it
def rows(fill, s, buf):
    for k in range(buf.shape[0]):
        fill(s, buf[k])


def best(fn, repeats):
    w, c = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        w, c = min(w, time.perf_counter() - t0), min(c, time.process_time() - c0)
    return w, c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    n = args.n
    s = stream(1, 0)
    small = np.empty(16)
    for f in (rng_fill_normal, polar_fill, raw_fill):  # compile
        f(s, small)
        rows(f, s, small.reshape(4, 4))
    g = np.random.Generator(np.random.PCG64(1))
    print(f"ns per normal, best of {args.repeats} (wall / CPU)")
    print(f"{'sampler':28s} {'one call of 1e6':>18s} {'d = 1':>16s} {'d = 10':>16s} {'d = 100':>16s}")
    cases = {"eosdyn ziggurat (xoshiro)": rng_fill_normal, "polar (xoshiro), before": polar_fill,
             "xoshiro256** raw draws": raw_fill}
    for name, fill in cases.items():
        buf = np.empty(n)
        cells = [best(lambda fill=fill, buf=buf: fill(s, buf), args.repeats)]
        for d in (1, 10, 100):
            b2 = np.empty((n // d, d))
            cells.append(best(lambda fill=fill, b2=b2: rows(fill, s, b2), args.repeats))
        print(f"{name:28s} " + " ".join(f"{w / n * 1e9:7.2f} / {c / n * 1e9:6.2f}" for w, c in cells), flush=True)
    buf = np.empty(n)
    cells = [best(lambda: g.standard_normal(out=buf), args.repeats)]
    for d in (1, 10, 100):
        b1 = np.empty(d)

        def per_row(b1=b1, d=d):
            for _ in range(n // d):
                g.standard_normal(out=b1)
        cells.append(best(per_row, args.repeats) if d > 1 else (np.nan, np.nan))
    print(f"{'numpy PCG64 standard_normal':28s} " + " ".join(f"{w / n * 1e9:7.2f} / {c / n * 1e9:6.2f}"
                                                          for w, c in cells))
    print("(numpy per row: one Python call per row of d normals, so its per-call overhead shows; d = 1 skipped)")


if __name__ == "__main__":
    main()
