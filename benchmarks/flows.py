"""Benchmark: Hessian-vector products per central-flow step on the authors' MLP, warm-started.

Setup (Cohen et al., ICLR 2025, their example): MLP 8→16→16→1, swish, n = 128, x, y ~ N(0, 1),
MSE, GD at η = 0.1, float64, 4 Euler substeps per step, 5 tracked eigenvalues. To reach the
edge without integrating 450 steps first, the flow starts from GD's iterate at ``--start``
(default 400, where ηλ₁ ≈ 1.9 for torch seed 0) and runs ``--steps`` steps.

Printed: the median HVPs per step after step 50 (eigenpairs; ``hvp_count``), the median
number k of eigenvalues in the complementarity problem, the goal 3k + 2, third-derivative
calls per step, and the wall time per step. The authors' eigen-solver, LOBPCG warm-started
from the last vectors, applies the operator to [X, P, R] and again to X: about 4m HVPs per
LOBPCG iteration for m tracked vectors, so at least 4m per substep and 16m per step with 4
substeps (one iteration each, a lower bound; their package is not installed here, so the
count is from the algorithm, not measured).

Usage: python benchmarks/flows.py [--start 400] [--steps 150] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=int, default=400)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from eosdyn import bridge

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    X = torch.randn(128, 8, dtype=torch.float64)
    Y = torch.randn(128, 1, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16), torch.nn.SiLU(),
                                torch.nn.Linear(16, 1)).double()
    loss_fn = torch.nn.MSELoss()
    gd = bridge.gd_trajectory(model, loss_fn, (X, Y), 0.1, a.start)
    torch.nn.utils.vector_to_parameters(torch.as_tensor(gd.theta[-1]), model.parameters())
    t0 = time.perf_counter()
    cf = bridge.central_flow(model, loss_fn, (X, Y), 0.1, a.steps)
    wall = time.perf_counter() - t0
    hv = cf.extra["hvp_count"][50:-1]
    k = cf.extra["n_tracked"][50:-1]
    third = cf.extra["third_derivative_calls"][50:-1]
    print(f"central flow on the reference MLP (d = {sum(p.numel() for p in model.parameters())}), from GD step "
          f"{a.start}, {a.steps} steps, {a.threads} thread(s): status {cf.status}")
    print(f"  ηλ₁ at the start {cf.extra['effective_sharpness'][0, 0]:.4f}, at the end "
          f"{cf.extra['effective_sharpness'][-1, 0]:.4f}; unstable directions at the end {cf.extra['n_unstable'][-1]}")
    kmed = float(np.median(k))
    print(f"  HVPs per step after step 50: median {np.median(hv):.0f} (min {hv.min()}, max {hv.max()}); "
          f"median tracked k = {kmed:.0f}; goal 3k + 2 = {3 * kmed + 2:.0f}")
    print(f"  third-derivative calls per step: median {np.median(third):.0f} (k(k+1)/2 per substep)")
    print(f"  authors' LOBPCG, from its algorithm: ≥ 4·m = {4 * 5} HVPs per substep, ≥ {16 * 5} per step "
          f"(m = 5 tracked vectors, 4 substeps, one iteration each)")
    print(f"  wall time {wall:.1f} s, {wall / a.steps * 1e3:.0f} ms per step")


if __name__ == "__main__":
    main()
