
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


#: ``python -m pytest -m smoke``: one cheap test per subpackage (issue 16), about 2 minutes with
#: empty caches on 2 cores. Listed here, in one place, rather than decorated in each file.
SMOKE = (
    "tests/test_losses.py::test_scalar_net_depth2_is_xy_minus_one",                   # losses
    "tests/test_rules_registry.py::test_unknown_rule_names_are_refused_everywhere_with_the_known_names",  # rules
    "tests/test_sim.py::test_gd_converges_iff_lr_below_two_over_lambda",              # engine, sim, codegen
    "tests/test_sde.py::test_sra1_linear_additive_against_exact_solution",           # sde
    "tests/test_curvature.py::test_exact_matches_eigh",                               # curvature
    "tests/test_analysis.py::test_stability_gd_classification_at_the_edge",           # analysis
    "tests/test_sgd.py::test_exact_batch_sharpness_equals_a_direct_computation",      # analysis.sgd
    "tests/test_flows.py::test_sdcp_k1_is_the_closed_form",                           # flows
    "tests/test_bridge.py::test_hvp_matches_autograd_hessian",                        # bridge (torch)
    "tests/test_sweep.py::test_resume_skips_done_points_and_records_metadata",       # sweep
    "tests/test_security.py::test_hostile_expression_is_refused_naming_the_token",   # the sympy whitelist
    "tests/test_cli.py::test_parse_spec_grammar",                                     # cli, specs
    "tests/test_figures.py::test_registry",                                           # plot, figures
    "tests/test_theory.py::test_thresholds_derivation_gives_the_closed_forms",        # theory/
    "tests/test_warmup.py::test_cells_cover_every_family_and_rule",                   # warmup
    "tests/test_lint.py::test_ruff_is_clean_on_the_package",
)


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch gets its share of the cores (cores // workers, at
    least 1): N workers each running torch on every core oversubscribe the machine (and make
    ``bridge.train`` warn about it)."""
    import os

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    try:
        import torch
    except ImportError:  # the core tests run without torch
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // int(workers)))


def pytest_collection_modifyitems(config, items):
    smoke = pytest.mark.smoke
    for item in items:
        base = item.nodeid.split("[", 1)[0]
        if base in SMOKE:
            item.add_marker(smoke)
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
        env = dict(os.environ, NUMBA_NUM_THREADS=nt, EOSDYN_MIN_PARALLEL_WORK="0")  # small runs use every thread
        p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, p.stderr[-3000:]
        threads, digest = p.stdout.split()[-2:]
        assert threads == nt
        out[nt] = digest
    return out
