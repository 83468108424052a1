"""Matvec counts of ``top_eigenpairs`` (thick-restart Lanczos) vs scipy's eigsh (ARPACK).

Run ``python -m eosdyn.curvature._benchmark [--quick] [--no-torch]``. Prints, for
each operator, k and tolerance, the matvecs each solver used (both with
which="LA", the same tolerance and the same random start), the ratio, and the
eigenvalue error against a dense reference where there is one. Operators:

- dense test spectra (gap above a uniform bulk, Hessian-like outliers over a
  Marchenko-Pastur bulk with a few negative eigenvalues, a clustered top, a large
  negative eigenvalue);
- the Hessian of an MLP 784-100-50-10 (84 060 parameters; ``--quick``: 64-32-10)
  with cross-entropy on 1000 synthetic points, float64, HVPs by double backward on
  CUDA if available. eigsh gets the same HVP through a numpy LinearOperator (the
  device round trip is not counted, only products).

Timings are wall-clock and include the matvecs; they are only comparable within
one run on one machine.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def _spectra(n, rng):
    X = rng.standard_normal((n, 2 * n)) / math.sqrt(2 * n)
    mp = 0.5 * np.linalg.eigvalsh(X @ X.T)
    return {
        "gap": np.concatenate([[1.1], rng.uniform(-1, 1, n - 1)]),
        "hessian-like": np.concatenate([[50, 30, 22, 15, 12, 9, 7, 5, 4, 3.5], mp[: n - 20] - 0.02,
                                        -rng.uniform(0, 0.3, 10)]),
        "clustered": np.concatenate([[10, 9.99, 9.98, 9.97, 9.96], rng.uniform(-3, 8, n - 5)]),
        "big-negative": np.concatenate([[2.0, 1.9, -8.0], rng.uniform(-1, 1.5, n - 3)]),
    }


def _eigsh_count(matvec_np, n, k, tol, v0):
    import scipy.sparse.linalg as sla

    count = [0]

    def mv(v):
        count[0] += 1
        return matvec_np(np.ravel(v))

    L = sla.LinearOperator((n, n), matvec=mv, dtype=np.float64)
    t = time.perf_counter()
    vals = sla.eigsh(L, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return count[0], np.sort(vals)[::-1], time.perf_counter() - t


def _row(name, k, tol, ours, t_ours, n_e, t_e, err_o, err_e):
    print(f"{name:>14} k={k:<2d} tol={tol:.0e}  ours {ours:5d} ({t_ours:6.2f}s)  eigsh {n_e:5d} "
          f"({t_e:6.2f}s)  ratio {ours / n_e:5.2f}  |err| ours {err_o:.1e} eigsh {err_e:.1e}")


def dense_bench(quick: bool, seeds: int) -> list:
    from . import dense_operator, top_eigenpairs

    n = 600 if quick else 1500
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    rows = []
    print(f"dense symmetric matrices, n = {n}, {seeds} random starts each (mean counts)")
    for name, ev in _spectra(n, rng).items():
        A = (Q * ev) @ Q.T
        A = 0.5 * (A + A.T)
        ref = np.sort(ev)[::-1]
        op = dense_operator(A)
        for k in (1, 5):
            for tol in (1e-6, 1e-8):
                o, e, to, te, eo, ee = [], [], 0.0, 0.0, 0.0, 0.0
                for s in range(seeds):
                    v0 = np.random.default_rng(s).standard_normal(n)
                    t = time.perf_counter()
                    r = top_eigenpairs(op, n, k=k, tol=tol, v0=v0)
                    to += time.perf_counter() - t
                    ne, vals, dt = _eigsh_count(lambda v: A @ v, n, k, tol, v0)
                    te += dt
                    o.append(r.n_matvecs)
                    e.append(ne)
                    eo = max(eo, float(np.abs(r.eigenvalues - ref[:k]).max()))
                    ee = max(ee, float(np.abs(vals - ref[:k]).max()))
                _row(name, k, tol, int(round(np.mean(o))), to / seeds, int(round(np.mean(e))), te / seeds, eo, ee)
                rows.append((name, k, tol, np.mean(o), np.mean(e)))
    return rows


def mlp_bench(quick: bool) -> list:
    import torch

    from . import top_eigenpairs

    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dims = (64, 32, 10) if quick else (784, 100, 50, 10)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers[:-1]).to(dev, torch.float64)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    X = torch.randn(1000, dims[0], dtype=torch.float64, device=dev)
    y = torch.randint(0, dims[-1], (1000,), device=dev)

    def hvp(v):
        loss = torch.nn.functional.cross_entropy(model(X), y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        gv = sum((gi.reshape(-1) * vi).sum() for gi, vi in zip(g, torch.split(v, [p.numel() for p in params])))
        Hv = torch.autograd.grad(gv, params)
        return torch.cat([h.reshape(-1) for h in Hv])

    def hvp_np(v):
        return hvp(torch.as_tensor(v, device=dev)).cpu().numpy()

    like = torch.zeros(n, dtype=torch.float64, device=dev)
    print(f"MLP {'-'.join(map(str, dims))} Hessian: {n} parameters, float64 on {dev}")
    rows = []
    for k in (1, 5) if not quick else (1,):
        for tol in (1e-6,):
            v0 = np.random.default_rng(0).standard_normal(n)
            t = time.perf_counter()
            r = top_eigenpairs(hvp, n, k=k, tol=tol, v0=torch.as_tensor(v0, device=dev), like=like)
            t_o = time.perf_counter() - t
            ne, vals, t_e = _eigsh_count(hvp_np, n, k, tol, v0)
            err = float(np.abs(r.eigenvalues - vals).max())
            _row("mlp", k, tol, r.n_matvecs, t_o, ne, t_e, err, 0.0)
            print(f"{'':>14} λ ours {np.array2string(r.eigenvalues, precision=6)}  residuals "
                  f"{np.array2string(r.residual_norms, precision=1)}")
            rows.append(("mlp", k, tol, r.n_matvecs, ne))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller problems, one start")
    ap.add_argument("--no-torch", action="store_true", help="skip the MLP Hessian")
    a = ap.parse_args(argv)
    rows = dense_bench(a.quick, 1 if a.quick else 3)
    if not a.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not installed: MLP benchmark skipped")
        else:
            rows += mlp_bench(a.quick)
    ratios = np.array([r[3] / r[4] for r in rows])
    print(f"matvec ratio ours/eigsh: median {np.median(ratios):.2f}, max {ratios.max():.2f} "
          f"over {len(rows)} cases")


if __name__ == "__main__":
    main()
