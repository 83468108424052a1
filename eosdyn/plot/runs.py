"""Small run helpers shared by the optimizer-comparison figures (4 and 5) and the notebooks.

* :func:`seed_runs` — a rule from several starts, through :func:`eosdyn.ensemble`, with the
  loss at every step and λ₁ every ``record_every`` steps, as (n_seeds, ·) arrays.
* :func:`steps_to_target` — first step at which each run's loss is ≤ a target (inf if never).
* :func:`best_of` — the configuration of a grid with the fewest mean steps to a target
  (ties, e.g. never reaching it, broken by :func:`final_loss`).
* :func:`speedup` — a ratio of mean steps (or times), inf/NaN-aware.
"""
from __future__ import annotations

import numpy as np


def seed_runs(loss, rule, theta0s, steps: int, record_every: int = 10, blowup: float = 1e8) -> dict:
    """One run of ``rule`` per row of ``theta0s`` in the stepping core (:func:`eosdyn.ensemble`), in
    the shape the comparison figures draw: the loss at every step, λ₁ every ``record_every``.

    The rule follows its own curvature schedule (as it would in any simulation). A run with
    |θᵢ| ≥ ``blowup`` counts as diverged (kept small: far beyond it the Hessian of a quartic
    loss overflows). Returns ``step`` (steps + 1,), ``loss`` (n, steps + 1), ``sharp_step``
    (R,), ``sharpness`` (n, R) (NaN from a divergence on) and ``final_theta`` (n, d).
    """
    import eosdyn

    res = eosdyn.ensemble(loss, rule, np.atleast_2d(np.asarray(theta0s, float)), steps, record_every=1,
                          track_sharpness=True, blowup=blowup)
    return {"step": res.step, "loss": res.loss, "sharp_step": res.step[::record_every],
            "sharpness": res.sharpness[:, ::record_every], "final_theta": res.final_theta}


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
