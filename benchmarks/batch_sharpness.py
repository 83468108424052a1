"""Benchmark: batch sharpness on the 85k-parameter digits MLP, to 0.5% relative standard error.

Batch sharpness (Andreyev & Beneventano, arXiv 2412.20553) E_B[g_Bᵀ H_B g_B/‖g_B‖²] is
estimated by :func:`eosdyn.bridge.batch_sharpness`: one HVP per fresh batch, stopping when the
relative standard error of the mean is below ``rel_std_error`` (default 0.5%, 10 to 1000
batches). Printed per batch size: the estimate, its 95% t-interval, the HVPs (= batches) it
took, the relative standard error reached, and the wall time. Model: tanh MLP 64-256-256-10
(85,002 parameters) on the 1797 digits, MSE on one-hot targets, at initialisation (seed 0)
and after 200 steps of SGD (η = 0.05), float32 or float64.

Usage: python benchmarks/batch_sharpness.py [--dtype float64|float32] [--threads 1]
"""
from __future__ import annotations

import argparse
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", default="8,32,128")
    a = ap.parse_args(argv)
    import torch

    from eosdyn import bridge as B

    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    X, Y = B.digits(dtype=dtype)
    torch.manual_seed(0)
    model = B.MLP(64, (256, 256), 10, "tanh").to(dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    for phase in ("initialisation", "after 200 SGD steps"):
        if phase != "initialisation":
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            g = torch.Generator().manual_seed(1)
            for _ in range(200):
                idx = torch.randint(0, X.shape[0], (32,), generator=g)
                opt.zero_grad()
                B.mse_loss(model(X[idx]), Y[idx]).backward()
                opt.step()
        print(f"digits MLP 64-256-256-10 ({n_params} parameters, {a.dtype}, {a.threads} thread(s)), {phase}:")
        for b in sizes:
            t0 = time.perf_counter()
            r = B.batch_sharpness(model, B.mse_loss, (X, Y), b, seed=0)
            dt = time.perf_counter() - t0
            print(f"  B = {b:4d}: {r.value:.5g}  95% CI [{r.ci95[0]:.5g}, {r.ci95[1]:.5g}]  HVPs {r.n_hvp:4d}  "
                  f"rel. s.e. {r.rel_std_error:.4f}  reached {r.reached_target}  {dt:.1f} s")


if __name__ == "__main__":
    main()
