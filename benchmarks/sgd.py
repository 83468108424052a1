"""Benchmark: an SGD ensemble against a GD ensemble of the same size on a LeastSquares loss.

Run:  python benchmarks/sgd.py [--quick]

LeastSquares with n = 256 examples in d = 10; 10⁴ trajectories × 10³ steps (``--quick``: 10³),
records only at the end. Both run the per-trajectory kernel (LeastSquares has no blocked
gradient). Timed, best of ``--repeat``, in this one process, with 1 and 2 numba threads:

- GD(η): per step ∇L = Hθ − b, O(d²);
- SGD(η, B = n): the full batch, which the core runs as GD (no draw): the same cost;
- SGD(η, B) for B = 8 and 32 without replacement (partial Fisher–Yates), B = 8 with
  replacement, and B = 8 with momentum 0.9: per step ∇L (the divergence check and ‖∇L‖
  stay on the full gradient), B indices drawn, and g_B over the B rows, O(Bd);
- the minibatch gather alone: a numba loop that draws the B indices and forms g_B (the
  loss's own ``batch_fn``) for every trajectory-step, nothing else.

Printed: seconds, trajectory-steps per second, SGD/GD, and (SGD − gather)/GD — the goal
is SGD ≤ 1.5 × GD plus the gather.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

import eosdyn
from eosdyn._rng import rng_init_rows
from eosdyn.engine.minibatch import draw_minibatch
from eosdyn.losses import LeastSquares
from eosdyn.losses.finite_sum import ls_batch_value_grad
from eosdyn.rules import GD, SGD


def timed(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@njit(parallel=True, cache=True)
def gather_only(params, thetas, rngs, n, B, replace, steps):
    """Draw B of n indices and form g_B at a fixed θ, ``steps`` times per trajectory: the gather's cost."""
    k, d = thetas.shape
    acc = np.zeros(k)
    for i in prange(k):
        idx = np.empty(B, np.int64)
        swaps = np.empty(B, np.int64)
        perm = np.arange(n if not replace else 0)
        gb = np.empty(d)
        for _ in range(steps):
            draw_minibatch(rngs[i], n, replace, perm, swaps, idx)
            acc[i] += ls_batch_value_grad(thetas[i], params, idx, gb)
    return acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer trajectories")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    k, steps, n, d = (1000 if a.quick else 10_000), 1000, 256, 10
    work = k * steps
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    ls = LeastSquares(X, X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n))
    lr = 0.5 / np.linalg.eigvalsh(ls.H)[-1]
    th0 = ls.minimizer + rng.standard_normal((k, d))
    cases = [("GD", GD(lr)), ("SGD B = n (runs as GD)", SGD(lr, n)),
             ("SGD B = 8", SGD(lr, 8)), ("SGD B = 32", SGD(lr, 32)),
             ("SGD B = 8, with replacement", SGD(lr, 8, replacement=True)),
             ("SGD B = 8, momentum 0.9", SGD(lr, 8, momentum=0.9))]
    print(f"LeastSquares n = {n}, d = {d}; {k} trajectories x {steps} steps; numba threads available: "
          f"{numba.config.NUMBA_NUM_THREADS}\n")
    for _, r in cases:  # compile outside the timings
        eosdyn.ensemble(ls, r, th0[:2], 2, record_every=2, track_sharpness=False)
    rngs = np.zeros((k, 4), np.uint64)
    rng_init_rows(np.uint64(0), np.uint64(0), rngs)  # (an all-zero xoshiro state would draw zeros forever)
    gather_only(ls.params, th0[:2], rngs[:2], n, 8, False, 2)
    gather_only(ls.params, th0[:2], rngs[:2], n, 8, True, 2)
    for nt in (1, 2):
        numba.set_num_threads(nt)
        res = {}
        for name, r in cases:
            res[name] = timed(lambda r=r: eosdyn.ensemble(ls, r, th0, steps, record_every=steps,
                                                          track_sharpness=False), a.repeat)
        gather = {}
        for B, rep in ((8, False), (32, False), (8, True)):
            rng_init_rows(np.uint64(0), np.uint64(0), rngs)
            gather[B, rep] = timed(lambda B=B, rep=rep: gather_only(ls.params, th0, rngs, n, B, rep, steps),
                                   a.repeat)
        t_gd = res["GD"]
        print(f"--- {nt} thread(s)")
        for name, _ in cases:
            sec = res[name]
            line = f"{name:<30s} {sec:7.3f} s  {work / sec / 1e6:7.2f} M traj-steps/s   SGD/GD {sec / t_gd:5.2f}"
            key = {"SGD B = 8": (8, False), "SGD B = 32": (32, False), "SGD B = 8, with replacement": (8, True),
                   "SGD B = 8, momentum 0.9": (8, False)}.get(name)
            if key is not None:
                line += f"   (SGD - gather)/GD {(sec - gather[key]) / t_gd:5.2f}"
            print(line)
        for (B, rep), sec in gather.items():
            print(f"  gather alone, B = {B:<3d} {'with' if rep else 'without'} replacement: {sec:7.3f} s")
        print()


if __name__ == "__main__":
    main()
