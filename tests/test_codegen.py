"""The one code generator: every built-in (loss family, rule) pair takes the generated,
disk-cached kernel path in a fresh process, and the generated kernel equals the generic one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

PAIRS = textwrap.dedent("""
    import json, warnings
    import numpy as np
    from eosdyn.engine.kernels import kernel_for
    from eosdyn.losses import (Quadratic, DeepLinear, ScalarNet, SqrtLoss, from_sympy, LogisticCubic,
                               ZhuMinimalist, LeastSquares)
    from eosdyn.rules import rules
    from eosdyn.codegen import GenericKernelWarning

    def families():
        rng = np.random.default_rng(0)
        X = rng.standard_normal((6, 2))
        yield Quadratic(eigs=[2.0, 1.0])
        yield DeepLinear(X, X @ rng.standard_normal((2, 2)), [3])
        yield ScalarNet(3, 1.0)
        yield SqrtLoss(Quadratic(eigs=[2.0, 1.0]), eps=1e-3)
        yield SqrtLoss(ScalarNet(2, 1.0))
        yield from_sympy("(x*y - 1)**2/2 + a*log(1 + x**2)", ["x", "y"], params={"a": 0.3})
        yield LogisticCubic()
        yield ZhuMinimalist()
        yield LeastSquares(X, rng.standard_normal(6))

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", GenericKernelWarning)
        for loss in families():
            for name, cls in rules().items():
                rule = cls(**{cls.step_parameter: 0.1})
                cmethod, ck = rule.resolved_curvature(loss.dim)[:2]
                for track in (None, 1):
                    k = kernel_for("trajectory", (None, None, cmethod if ck else None, track, loss.value_fn,
                                   loss.grad_into_fn, loss.hess_fn, loss.hvp_fn, rule.step_fn, rule.precond_fn,
                                   None, None, None, None), "test")
                    out.append([type(loss).__name__, name, "trajectory", k.generated is not None])
                if loss.grad_block_fn is not None and rule.step_block_fn is not None:
                    k = kernel_for("blocked", (1, loss.value_fn, loss.grad_block_fn, loss.hess_fn, rule.step_fn,
                                               rule.step_block_fn, rule.precond_fn), "test")
                    out.append([type(loss).__name__, name, "blocked", k.generated is not None])
                if rule.jacobian_fn is not None:
                    k = kernel_for("lyapunov", (None, loss.grad_into_fn, loss.hess_fn, loss.hvp_fn, rule.step_fn,
                                                rule.jacobian_fn), "test")
                    out.append([type(loss).__name__, name, "lyapunov", k.generated is not None])
    print(json.dumps(out))
""")


def test_every_builtin_pair_takes_the_generated_path_in_a_fresh_process(tmp_path):
    """Generating a kernel compiles nothing (numba compiles at the first call), so the whole
    matrix — 9 loss families × 7 rules × the kernel kinds each pair uses — is cheap to check."""
    env = dict(os.environ, EOSDYN_CACHE_DIR=str(tmp_path))
    p = subprocess.run([sys.executable, "-c", PAIRS], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(rows) >= 9 * 7 * 2
    missing = [r for r in rows if not r[3]]
    assert not missing, missing
    assert {r[2] for r in rows} == {"trajectory", "blocked", "lyapunov"}


def _pair_cases():
    from eosdyn.losses import DeepLinear, LogisticCubic, Quadratic, ScalarNet, SqrtLoss, ZhuMinimalist, from_sympy
    from eosdyn.rules import rules

    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 2))
    losses = {"quadratic": Quadratic(eigs=[2.0, 1.0]), "deeplinear": DeepLinear(X, X @ rng.standard_normal((2, 2)), [3]),
              "scalarnet": ScalarNet(3, 1.0), "sqrt": SqrtLoss(Quadratic(eigs=[2.0, 1.0]), eps=1e-3),
              "sympy": from_sympy("(x*y - 1)**2/2", ["x", "y"]), "cubic": LogisticCubic(), "zhu": ZhuMinimalist()}
    return [(ln, rn) for ln in losses for rn in rules()], losses


@pytest.mark.slow
@pytest.mark.parametrize("case", _pair_cases()[0], ids=lambda c: "-".join(c))
def test_generated_kernel_equals_generic_kernel_for_every_pair(case, monkeypatch):
    """Each built-in pair through its generated kernel and through the generic loop: bit-identical."""
    import warnings

    import eosdyn
    from eosdyn.engine import kernels as K
    from eosdyn.rules import rules

    loss = _pair_cases()[1][case[0]]
    cls = rules()[case[1]]
    rule = cls(**{cls.step_parameter: 0.05})
    if rule.curvature_k > loss.dim:  # DCAO's default k = 2 on a one-parameter loss: its validation refuses it
        rule = cls(**{cls.step_parameter: 0.05, "k": loss.dim})
    th0 = 0.5 + np.random.default_rng(1).random((4, loss.dim))
    runs = []
    for gen in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(K, "_KERNELS", {})
            if not gen:
                def refuse(*a, **k):
                    raise K.NotSpecialisable("forced")

                mp.setattr(K, "specialise", refuse)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = eosdyn.ensemble(loss, rule, th0, 30, record_every=3, record_theta=True, track_sharpness=True)
            assert r.params["generated_kernel"] is gen
            runs.append(r)
    for name in ("final_theta", "loss", "theta", "sharpness", "lr", "diverged_at"):
        assert np.array_equal(getattr(runs[0], name), getattr(runs[1], name), equal_nan=True), name


def test_generated_ensemble_kernels_call_their_callee_out_of_line(monkeypatch):
    """The disk-cached ensemble loops receive the generated per-trajectory (or per-block, per-path)
    function as a first-class function of its exact signature — called through its address, so
    numba compiles it once rather than again inside the loop. (That they give the generic loop's
    numbers: test_engine's and test_sde's generated-vs-generic tests, and the slow pair matrix.)"""
    from numba.core import types

    import eosdyn
    from eosdyn.engine import kernels as K
    from eosdyn.losses import Quadratic, ScalarNet
    from eosdyn.rules import GD, HeavyBall
    from eosdyn.sde import Isotropic
    from eosdyn.sde import simulate as sde_simulate

    monkeypatch.setattr(K, "_KERNELS", {})
    th0 = np.array([[2.5, 0.1], [1.5, 0.7], [0.3, 2.0]])
    eosdyn.ensemble(ScalarNet(2, 1.0), HeavyBall(0.3, momentum=0.5), th0, steps=60, kernel="trajectory")
    eosdyn.ensemble(ScalarNet(2, 1.0), GD(0.4), th0, steps=60, kernel="blocked")
    sde_simulate(Quadratic(eigs=[2.0, 1.0]), 0.1, Isotropic(0.1), th0, dt=0.1, steps=30, seed=3)
    kernels = [k for _, k in K._KERNELS.values() if k.generated is not None and k.generated.overloads]
    assert {k.kind for k in kernels} == {"trajectory", "blocked", "sde"}   # (run_map makes kernels it may not run)
    for k in kernels:
        assert k.callee is not None
        sigs = list(k.generated.overloads)
        assert all(isinstance(sig[0], types.FunctionType) for sig in sigs)
        assert {sig[0].signature.args for sig in sigs} == {tuple(s) for s in k.callee.overloads}
