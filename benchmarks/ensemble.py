"""Benchmark: the numba ensemble kernels against a numpy-vectorised reference and a Python loop.

Run:  python benchmarks/ensemble.py [--quick]

Cases (the issue's): the GD map and the noisy EoS-Ada map on a d = 10 quadratic;
the same on a nonlinear toy (the depth-3 scalar network ½(w₁w₂w₃ − 1)², d = 3 —
the numpy reference vectorises over trajectories); 10⁴ trajectories × 10³ steps.
Everything runs in this one process, one after another, and prints
trajectory-steps per second and the ratios, with 1 and 2 numba threads.

Deterministic rules run, by default, the *blocked* kernel (``kernel="auto"``: blocks of
trajectories in structure-of-arrays layout, SIMD across trajectories); the
per-trajectory kernel (``kernel="trajectory"``, the one the noisy EoS-Ada case
needs) is timed beside it. Both give bit-identical trajectories.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np

import eosdyn
from eosdyn.losses import Quadratic
from eosdyn.rules import GD, EoSAda


def settle():
    """Let BLAS worker threads stop spinning after a numpy call before timing numba threads."""
    time.sleep(0.5)


def timed(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller problem")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    n, steps = (1000, 1000) if a.quick else (10_000, 1000)
    work = n * steps
    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 10))
    H = A @ A.T / 10 + 0.1 * np.eye(10)
    lam = np.linalg.eigvalsh(H)[-1]
    quad = Quadratic(H)
    th0 = rng.standard_normal((n, 10))
    gd = GD(1.0 / lam)
    ada = EoSAda(alpha=1.0, eps=0.0, noise_scale=0.01, noise_decay=0.0, curvature="exact",
                 curvature_every=steps)  # λ_max probed once per run: H is constant
    rows = []

    def report(name, sec, ref=None, ref_name=""):
        rate = work / sec
        extra = f"   ratio vs {ref_name}: {ref / sec:6.2f}x" if ref else ""
        print(f"{name:<46s} {sec:8.3f} s  {rate / 1e6:8.2f} M traj-steps/s{extra}")
        rows.append((name, sec))

    print(f"n = {n} trajectories x {steps} steps, d = 10 quadratic\n")
    # warm up (compile) outside the timings
    for r in (gd, ada):
        eosdyn.ensemble(quad, r, th0[:2], 2, record_every=1, track_sharpness=False)

    # --- deterministic GD on the quadratic
    def numpy_gd():
        x = th0.copy()
        for _ in range(steps):
            x -= gd.lr * (x @ H)
        return x

    t_np = timed(numpy_gd, a.repeat)
    settle()
    report("numpy-vectorised GD", t_np)
    res = {}
    for kern in ("trajectory", "blocked"):
        for nt in (1, 2):
            numba.set_num_threads(nt)
            res[kern, nt] = timed(lambda: eosdyn.ensemble(quad, gd, th0, steps, record_every=steps,
                                                          track_sharpness=False, kernel=kern), a.repeat)
            report(f"eosdyn GD ({kern} kernel), {nt} thread(s)", res[kern, nt], t_np, "numpy")
        print(f"  {kern}: per core (1 thread) {work / res[kern, 1] / 1e6:.1f} M traj-steps/s (target >= 20); "
              f"2-thread speed-up {res[kern, 1] / res[kern, 2]:.2f}x (target >= 1.7)")

    m = min(n, 200)
    x = th0[:m].copy()

    def py_loop():
        for i in range(m):
            xi = x[i].copy()
            for _ in range(steps):
                xi = xi - gd.lr * (H @ xi)

    t_py = timed(py_loop, 1) * n / m
    report("python loop (extrapolated from 200 traj)", t_py)
    print(f"  eosdyn 2 threads (blocked) vs python loop: {t_py / res['blocked', 2]:.0f}x\n")

    # --- noisy EoS-Ada on the quadratic, against the cost of the normals alone
    def normals_alone():
        g = np.random.Generator(np.random.PCG64(0))
        for _ in range(steps):
            g.standard_normal((n, 10))

    t_norm = timed(normals_alone, a.repeat)
    settle()
    report("numpy PCG64 normals alone", t_norm)

    def numpy_ada():
        g = np.random.Generator(np.random.PCG64(0))
        x = th0.copy()
        lr = 1.0 / lam
        for _ in range(steps):
            x += -lr * (x @ H) + 0.01 * g.standard_normal((n, 10))
        return x

    t_npada = timed(numpy_ada, a.repeat)
    settle()
    report("numpy-vectorised noisy EoS-Ada", t_npada)
    for nt in (1, 2):
        numba.set_num_threads(nt)
        res[nt] = timed(lambda: eosdyn.ensemble(quad, ada, th0, steps, record_every=steps,
                                                track_sharpness=False), a.repeat)
        report(f"eosdyn noisy EoS-Ada, {nt} thread(s)", res[nt], t_norm, "normals alone")
    print(f"  cost relative to drawing the normals alone: 1 thread {res[1] / t_norm:.2f}x, "
          f"2 threads {res[2] / t_norm:.2f}x (target <= 1.3)")
    print(f"  2-thread speed-up: {res[1] / res[2]:.2f}x (target >= 1.7)\n")

    # --- nonlinear: depth-3 scalar net
    try:
        from eosdyn.losses import ScalarNet
    except ImportError:
        print("ScalarNet not available: nonlinear case skipped")
        return
    net = ScalarNet(3, 1.0)
    w0 = 1.0 + 0.3 * rng.standard_normal((n, 3))
    lr = 0.05
    for kern in ("trajectory", "blocked"):
        eosdyn.ensemble(net, GD(lr), w0[:2], 2, track_sharpness=False, kernel=kern)

    def numpy_net():
        w = w0.copy()
        for _ in range(steps):
            p = w[:, 0] * w[:, 1] * w[:, 2]
            r = (p - 1.0)[:, None]
            g = r * np.stack([w[:, 1] * w[:, 2], w[:, 0] * w[:, 2], w[:, 0] * w[:, 1]], axis=1)
            w -= lr * g
        return w

    t_npn = timed(numpy_net, a.repeat)
    settle()
    report("numpy-vectorised GD, scalar net depth 3", t_npn)
    for kern in ("trajectory", "blocked"):
        for nt in (1, 2):
            numba.set_num_threads(nt)
            res[nt] = timed(lambda: eosdyn.ensemble(net, GD(lr), w0, steps, record_every=steps,
                                                    track_sharpness=False, kernel=kern), a.repeat)
            report(f"eosdyn GD scalar net ({kern} kernel), {nt} thread(s)", res[nt], t_npn, "numpy")
        print(f"  {kern}: vs numpy-vectorised 1 thread {t_npn / res[1]:.1f}x, 2 threads {t_npn / res[2]:.1f}x "
              f"(target >= 5); 2-thread speed-up {res[1] / res[2]:.2f}x (target >= 1.7)")


if __name__ == "__main__":
    main()
