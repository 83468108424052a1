"""The engine's one parallel loop: blocks of trajectories on Python threads running ``nogil`` kernels.

The ensemble kernels (:func:`eosdyn.engine.core.run_ensemble`, ``run_ensemble_blocked`` and the
SDE integrators' :mod:`eosdyn.sde.kernels`) are serial numba functions over a range of
blocks ``b0 ≤ b < b1`` that release the GIL. :func:`run_blocks` cuts the ``nb`` blocks of a
call into contiguous chunks and runs them on a pool of :func:`thread_count` threads, each
chunk as one kernel call. Which thread runs which block never changes a result: each block's
trajectories run in order and write only their own rows and their block's moment sums, which
the caller adds over the blocks in order.

Why not numba's ``prange``: a ``parallel=True`` kernel is compiled twice over (numba types
the loop body, then lowers it again as a gufunc that links every callee once more), which cost
4–5 s of every cold start (the README's example: about 14 s → 10 s); it also starts numba's OpenMP
layer, which changes torch's thread count in the same process.

The thread count is numba's: ``numba.set_num_threads(k)`` (or ``NUMBA_NUM_THREADS``) limits
eosdyn's ensembles as it limits a ``prange``.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

#: chunks per thread: the pool takes the next chunk when one ends, so trajectories that stop
#: early (diverged ones) do not leave a thread idle for long
CHUNKS_PER_THREAD = 4

#: below this many trajectory-steps a call runs in the calling thread: handing chunks to the
#: pool costs ~0.1 ms, more than such a call computes (``EOSDYN_MIN_PARALLEL_WORK`` sets it: the
#: thread-count tests set 0, so their small runs use every thread)
MIN_PARALLEL_WORK = int(os.environ.get("EOSDYN_MIN_PARALLEL_WORK", 1 << 14))

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def threads_for(work: int) -> int:
    """Threads for a call of ``work`` trajectory-steps: 1 below :data:`MIN_PARALLEL_WORK`."""
    return 1 if work < MIN_PARALLEL_WORK else thread_count()


def thread_count() -> int:
    """The threads an ensemble kernel may use: ``numba.get_num_threads()`` once numba's threading
    layer is running (a ``numba.set_num_threads`` call starts it), else ``NUMBA_NUM_THREADS``
    (reading it through numba would start that layer for nothing)."""
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", True):  # numba's private flag; if it moves, ask numba
        return max(1, numba.get_num_threads())
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool(k: int) -> ThreadPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(k)
        if pool is None:
            pool = _POOLS[k] = ThreadPoolExecutor(max_workers=k, thread_name_prefix="eosdyn-blocks")
        return pool


def _forget_pools() -> None:  # a forked child has the pool objects but none of their threads
    _POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def chunks(nb: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous (b0, b1) chunks covering 0 … nb − 1: at most CHUNKS_PER_THREAD·threads of them,
    sizes differing by at most one."""
    k = max(1, min(nb, CHUNKS_PER_THREAD * threads))
    edges = [(j * nb) // k for j in range(k + 1)]
    return [(edges[j], edges[j + 1]) for j in range(k) if edges[j + 1] > edges[j]]


def run_blocks(call, nb: int, threads: int | None = None) -> None:
    """``call(b0, b1)`` over the blocks 0 … nb − 1 on up to ``threads`` threads (default
    :func:`thread_count`): one call ``call(0, nb)`` in the calling thread when one thread
    suffices, else a first ``call(0, 0)`` in the calling thread — it compiles the kernel there,
    under numba's lock, where a kernel that fails to compile can fall back once
    (:meth:`eosdyn.engine.kernels.Kernel.blocks`) — then contiguous chunks on the pool. An
    exception raised by a chunk is re-raised here once every chunk has ended."""
    threads = thread_count() if threads is None else int(threads)
    parts = chunks(nb, threads)
    if threads <= 1 or len(parts) <= 1:
        call(0, nb)
        return
    call(0, 0)
    pool = _pool(min(threads, len(parts)))
    futures = [pool.submit(call, b0, b1) for b0, b1 in parts]
    first_error = None
    for f in futures:
        try:
            f.result()
        except BaseException as exc:  # noqa: BLE001 - wait for every chunk, then re-raise
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
