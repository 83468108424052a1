"""Small run helpers shared by the optimizer-comparison figures (4 and 5) and the notebooks.

* :func:`toy_runs` — a rule's noise-free map from several starts
  (:func:`eosdyn.analysis.phase.orbits`), with the loss at every step and λ₁ every
  ``record_every`` steps, as (n_seeds, ·) arrays.
* :func:`steps_to_target` — first step at which each run's loss is ≤ a target (inf if never).
* :func:`best_of` — the configuration of a grid with the fewest mean steps to a target
  (ties, e.g. never reaching it, broken by :func:`final_loss`).
* :func:`speedup` — a ratio of mean steps (or times), inf/NaN-aware.
"""
from __future__ import annotations

import numpy as np


def toy_runs(loss, rule, theta0s, steps: int, record_every: int = 10, blowup: float = 1e8) -> dict:
    """Iterate ``rule`` (noise off) from each row of ``theta0s``; loss per step, λ₁ per record.

    A run with |θᵢ| ≥ ``blowup`` counts as diverged (kept small: far beyond it the Hessian of a
    quartic loss overflows, and a curvature-aware rule's eigensolver would meet inf).

    Returns ``step`` (steps + 1,), ``loss`` (n, steps + 1) and ``sharp_step`` (R,),
    ``sharpness`` (n, R) (NaN after a divergence), ``final_theta`` (n, d).
    """
    from ..analysis.phase import orbits

    th = np.atleast_2d(np.asarray(theta0s, float))
    paths = orbits(loss, rule, th, steps, blowup=blowup)
    n = th.shape[0]
    L = np.full((n, steps + 1), np.nan)
    rec = np.arange(0, steps + 1, record_every)
    S = np.full((n, rec.size), np.nan)
    for i in range(n):
        for t in range(steps + 1):
            p = paths[i, t]
            if np.all(np.isfinite(p)):
                L[i, t] = loss.value(p)
        for j, t in enumerate(rec):
            p = paths[i, t]
            if np.all(np.isfinite(p)):
                S[i, j] = np.linalg.eigvalsh(loss.hess(p))[-1]
    return {"step": np.arange(steps + 1), "loss": L, "sharp_step": rec, "sharpness": S,
            "final_theta": paths[:, -1, :]}


def steps_to_target(loss, target, step=None) -> np.ndarray:
    """For each row of ``loss`` (n, T): the first ``step`` with loss ≤ target (row-wise target allowed)."""
    loss = np.atleast_2d(np.asarray(loss, float))
    step = np.arange(loss.shape[1]) if step is None else np.asarray(step)
    tgt = np.broadcast_to(np.asarray(target, float), (loss.shape[0],))
    out = np.full(loss.shape[0], np.inf)
    for i in range(loss.shape[0]):
        hit = np.flatnonzero(loss[i] <= tgt[i])
        if hit.size:
            out[i] = step[hit[0]]
    return out


def best_of(results: dict, key: str = "steps_to_target", fallback=None):
    """The key of ``results`` (name -> dict with ``key``: per-seed array) with the smallest mean.

    Ties — notably configurations that never reach the target (mean inf) — are broken by
    ``fallback(result)`` (smaller is better), e.g. the mean final loss.
    """
    best, val = None, None
    for name, r in results.items():
        m = (float(np.mean(r[key])), float(fallback(r)) if fallback is not None else 0.0)
        if best is None or m < val:
            best, val = name, m
    return best, val[0]


def final_loss(r) -> float:
    """Mean over seeds of the last finite loss of each run (inf if a run has none): a tie-breaker."""
    L = np.atleast_2d(np.asarray(r["loss"], float))
    last = []
    for row in L:
        ok = np.isfinite(row)
        last.append(row[ok][-1] if ok.any() and ok[-1] else np.inf)
    return float(np.mean(last))


def speedup(baseline, method) -> float:
    """mean(baseline) / mean(method): > 1 means ``method`` is faster; NaN if neither is finite."""
    b = float(np.mean(baseline))
    m = float(np.mean(method))
    if not np.isfinite(m):
        return 0.0 if np.isfinite(b) else float("nan")
    if not np.isfinite(b):
        return float("inf")
    return b / m
