"""The engine's parallel loop (eosdyn.engine.threads): chunks of blocks on a thread pool."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eosdyn.engine import threads as T


@settings(max_examples=200, deadline=None)
@given(nb=st.integers(0, 2000), k=st.integers(1, 64))
def test_chunks_cover_the_blocks_once_in_order(nb, k):
    parts = T.chunks(nb, k)
    assert [b for b0, b1 in parts for b in range(b0, b1)] == list(range(nb))
    assert len(parts) <= max(1, T.CHUNKS_PER_THREAD * k)
    sizes = [b1 - b0 for b0, b1 in parts]
    assert all(s > 0 for s in sizes)
    if sizes:
        assert max(sizes) - min(sizes) <= 1


def test_run_blocks_runs_every_block_once_on_several_threads():
    """First an empty call in the calling thread (it compiles the kernel there), then every
    block exactly once, on the pool's threads."""
    seen, names, calls = [], set(), []
    lock = threading.Lock()

    def call(b0, b1):
        with lock:
            calls.append((b0, b1, threading.current_thread().name))
        if b1 == b0:
            return
        time.sleep(0.01)  # long enough for the pool to hand chunks to both threads
        with lock:
            seen.extend(range(b0, b1))
            names.add(threading.current_thread().name)

    T.run_blocks(call, 37, threads=2)
    assert calls[0] == (0, 0, threading.current_thread().name)
    assert sorted(seen) == list(range(37))
    assert len(names) == 2 and all(n.startswith("eosdyn-blocks") for n in names)


def test_one_thread_is_one_call_in_the_calling_thread():
    calls = []
    T.run_blocks(lambda b0, b1: calls.append((b0, b1, threading.current_thread().name)), 10, threads=1)
    assert calls == [(0, 10, threading.current_thread().name)]


def test_an_exception_in_a_chunk_is_raised_after_every_chunk_ended():
    done = []

    def call(b0, b1):
        if b1 == b0:  # the first, empty call
            return
        if b0 == 0:
            raise ZeroDivisionError("chunk 0")
        time.sleep(0.02)
        done.append(b0)

    with pytest.raises(ZeroDivisionError, match="chunk 0"):
        T.run_blocks(call, 8, threads=2)
    assert sorted(done) == [b0 for b0, _ in T.chunks(8, 2)][1:]


def test_thread_count_follows_numba_set_num_threads():
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert T.thread_count() == 1
    finally:
        numba.set_num_threads(before)
    assert T.thread_count() == before


SCRIPT = """
import numpy as np, torch
torch.set_num_threads(1)
import eosdyn
from eosdyn.losses import Quadratic
from eosdyn.rules import GD
from numba.np.ufunc import parallel
r = eosdyn.ensemble(Quadratic(eigs=[1.0, 0.5]), GD(0.5), np.ones((300, 2)), steps=20)
assert np.isfinite(r.loss).all()
print(torch.get_num_threads(), parallel._is_initialized)
"""


def test_an_ensemble_leaves_torch_threads_and_numba_threading_layer_alone(tmp_path):
    """numba's OpenMP layer, which a prange kernel started, reset torch's thread count in the
    same process; the thread pool starts neither."""
    pytest.importorskip("torch")
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-2:] == ["1", "False"]


def test_small_calls_stay_in_the_calling_thread(monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_WORK", 1000)
    assert T.threads_for(999) == 1
    assert T.threads_for(1000) == T.thread_count()
