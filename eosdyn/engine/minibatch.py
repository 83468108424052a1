"""Minibatch draws of the stepping core: B example indices per step from a trajectory's keyed stream.

The stepping core (:mod:`eosdyn.engine.core`) draws, for a rule that steps on a minibatch
gradient (:class:`eosdyn.rules.SGD`), B indices out of the n examples of a finite-sum loss at
every state, from the trajectory's own xoshiro256** stream (:mod:`eosdyn._rng`), so an SGD
ensemble is bit-identical for any thread count and any way a run is cut into calls.

**The draw** (:func:`draw_minibatch`), for one state:

- without replacement (the default): a *partial Fisher–Yates shuffle* of the identity
  permutation 0 … n − 1 — for k = 0, …, B − 1: j = k + U(n − k), swap perm[k] ↔ perm[j],
  index k = perm[k] — which gives B distinct examples, every ordered B-tuple equally likely
  (Knuth, TAOCP vol. 2, §3.4.2, Algorithm P stopped after B steps). The swaps are then undone,
  so ``perm`` is the identity again and nothing but the stream carries over between states;
- with replacement: B independent U(n).

U(m), a uniform integer in [0, m), comes from the top 32 bits x of one 64-bit output by
Lemire's nearly divisionless method (Lemire, "Fast random integer generation in an interval",
ACM TOMACS 2019): ⌊x·m / 2³²⌋, the output rejected and redrawn when (x·m mod 2³²) < 2³² mod m,
so it is exactly uniform (needs m ≤ 2³²; :data:`MAX_EXAMPLES`).

:func:`minibatch_indices` replays the draws of one trajectory from (seed, stream index), for
tests and for users who want to see which examples a run used.
"""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .._rng import rng_next, stream

#: the largest n the 32-bit draw serves
MAX_EXAMPLES = 2 ** 32
_LOW32 = 0xFFFFFFFF


@njit(cache=True)
def rng_below(s, m):
    """A uniform integer in [0, m) (int64) from stream ``s``; ``m`` a uint64 in [1, 2³²] (module docstring)."""
    x = rng_next(s) >> uint64(32)
    p = x * m
    lo = p & uint64(_LOW32)
    if lo < m:
        t = (uint64(_LOW32) - m + uint64(1)) % m  # 2³² mod m
        while lo < t:
            x = rng_next(s) >> uint64(32)
            p = x * m
            lo = p & uint64(_LOW32)
    return np.int64(p >> uint64(32))


@njit(cache=True)
def draw_minibatch(s, n, replace, perm, swaps, idx):
    """idx (B,) ← the indices of one minibatch out of n examples, drawn from stream ``s``.

    Without replacement ``perm`` (n,) must hold the identity permutation on entry, and holds it
    again on exit; ``swaps`` (B,) is scratch. With replacement neither is touched.
    """
    B = idx.shape[0]
    if replace:
        for k in range(B):
            idx[k] = rng_below(s, uint64(n))
        return
    for k in range(B):
        j = k + rng_below(s, uint64(n - k))
        pj = perm[j]
        perm[j] = perm[k]
        perm[k] = pj
        idx[k] = pj
        swaps[k] = j
    for k in range(B - 1, -1, -1):  # undo, last swap first: perm is the identity again
        j = swaps[k]
        pj = perm[j]
        perm[j] = perm[k]
        perm[k] = pj


@njit(cache=True)
def _replay(s, n, B, replace, states, out):
    perm = np.arange(n)
    swaps = np.empty(B, np.int64)
    for t in range(states):
        draw_minibatch(s, n, replace, perm, swaps, out[t])


def minibatch_indices(seed, stream_index, n_examples, batch_size, replacement, states) -> np.ndarray:
    """The (states, B) example indices that trajectory ``stream_index`` of a run seeded ``seed``
    draws at its first ``states`` states (row s: the batch that steps θ_s, and whose loss is the
    ``batch_loss`` recorded at state s).

    Valid for runs in which nothing else draws from the stream — no additive noise, no random
    curvature probe (SGD probes none): the core draws, per state, the probe's numbers first,
    then the minibatch, then the additive noise.
    """
    from .._validate import nonneg_int, seed_value

    seed = seed_value(seed)
    stream_index = seed_value(stream_index, "stream_index")
    n = nonneg_int("n_examples", n_examples, minimum=1)
    B = nonneg_int("batch_size", batch_size, minimum=1)
    check_batch(n, B, bool(replacement))
    states = nonneg_int("states", states)
    out = np.empty((states, B), np.int64)
    _replay(stream(seed, stream_index), n, B, bool(replacement), states, out)
    return out


def check_batch(n, B, replace) -> None:
    """Refuse a batch size the draw cannot serve: B > n without replacement, n > 2³²."""
    if not replace and n < B:
        raise ValueError(f"batch_size must be in [1, n_examples = {n}] when sampling without replacement, "
                         f"got {B}")
    if n > MAX_EXAMPLES:
        raise ValueError(f"the minibatch draw serves at most 2**32 examples, the loss has n_examples = {n}")
