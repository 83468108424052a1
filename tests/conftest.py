
import numpy as np
import pytest

# keep hypothesis quick and deterministic on CI
try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
    settings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


def digests_for_thread_counts(script, counts=("1", "2"), timeout=600):
    """Run ``script`` (it prints "<numba threads> <digest>" last) under each NUMBA_NUM_THREADS;
    returns {count: digest}, after checking that each ran with the threads it was given."""
    import os
    import subprocess
    import sys

    out = {}
    for nt in counts:
        env = dict(os.environ, NUMBA_NUM_THREADS=nt)
        p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, p.stderr[-3000:]
        threads, digest = p.stdout.split()[-2:]
        assert threads == nt
        out[nt] = digest
    return out
