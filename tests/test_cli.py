"""The spec-string parser (eosdyn.specs) and the ``eosdyn`` command line.

Specs: the grammar (lists continue until the next key=, brackets, spaces, ';', quotes), the
objects built (checked against direct construction), a parse/format round trip (hypothesis),
and every kind of bad spec -> SpecError naming the valid names / parameters.

Command line, through subprocess calls of the installed ``eosdyn`` entry point: --help on every
command (exit 0), bad specs (exit 2, valid names listed), the README's simulate example
(summary, NetCDF written and read back), a diverging run (exit 1 with the reason), the
threshold check (closed form, linearized and simulated values side by side), figure --list,
unknown figure (exit 2), bench against a scratch benchmarks directory, and sweep delegation.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eosdyn.specs import (LOSSES, RULES, SpecError, format_spec, parse_spec, resolve_loss, rule_family,
                          rule_from_spec)

EOSDYN = shutil.which("eosdyn")


def run(*args, env=None, timeout=300):
    cmd = [EOSDYN, *args] if EOSDYN else [sys.executable, "-m", "eosdyn.cli", *args]
    e = dict(os.environ, **(env or {}))
    e.setdefault("MPLBACKEND", "Agg")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


# ----------------------------------------------------------------------------- grammar
@pytest.mark.parametrize("text, params", [
    ("quadratic:eigs=10,1", {"eigs": [10, 1]}),
    ("quadratic:eigs=[10,1]", {"eigs": [10, 1]}),
    ("quadratic:eigs=10 1", {"eigs": [10, 1]}),
    ("quadratic:eigs=10,1,center=0.5,-2", {"eigs": [10, 1], "center": [0.5, -2]}),
    ("quadratic:eigs=10,1;center=0,0", {"eigs": [10, 1], "center": [0, 0]}),
    ("gd:lr=0.19", {"lr": 0.19}),
    ("heavyball:lr=1e-3,momentum=0.9", {"lr": 0.001, "momentum": 0.9}),
    ("eosada:curvature=exact,noise_scale=0", {"curvature": "exact", "noise_scale": 0}),
    ("adam:bias-correction=false", {"bias_correction": False}),
    ("sympy:expr='(x*y-1)**2/2',vars=x y", {"expr": "(x*y-1)**2/2", "vars": ["x", "y"]}),
    ("sympy:expr=\"atan2(x, y)\",vars=[x,y]", {"expr": "atan2(x, y)", "vars": ["x", "y"]}),
    ("GD:LR=0.1", {"lr": 0.1}),
    ("scalarnet", {}),
])
def test_parse_spec_grammar(text, params):
    name, got = parse_spec(text)
    assert name == text.split(":")[0].lower()
    assert got == params


@pytest.mark.parametrize("bad", ["", ":lr=1", "gd:0.1", "gd:lr=", "gd:lr=1,lr=2", "gd:lr=[1,2", "sympy:expr='x"])
def test_parse_spec_malformed(bad):
    with pytest.raises(SpecError):
        parse_spec(bad)


_key = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
_num = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=64))
_val = st.one_of(_num, st.lists(_num, min_size=2, max_size=4), st.booleans(),
                 st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
                     lambda s: s not in ("true", "false", "yes", "no", "on", "off", "none", "null", "inf",
                                         "nan", "infinity")))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_key, _val, max_size=4))
def test_format_parse_round_trip(params):
    name, got = parse_spec(format_spec("quadratic", params))
    assert name == "quadratic"
    assert got == {k: (list(v) if isinstance(v, list) else v) for k, v in params.items()}


# ----------------------------------------------------------------------------- objects
def test_loss_specs_build_the_right_losses():
    from eosdyn.losses import LogisticCubic, Quadratic, ScalarNet, SqrtLoss, ZhuMinimalist

    q = resolve_loss("quadratic:eigs=10,1,center=1,2")
    ref = Quadratic(eigs=[10.0, 1.0], center=[1.0, 2.0])
    np.testing.assert_array_equal(q.loss.H, ref.H)
    np.testing.assert_array_equal(q.minimizer, [1.0, 2.0])
    assert q.loss.grad(q.minimizer) == pytest.approx([0.0, 0.0])
    s = resolve_loss("scalarnet:depth=3,target=2")
    assert isinstance(s.loss, ScalarNet) and s.loss.depth == 3 and s.loss.target == 2.0
    assert s.loss.value(s.minimizer) == pytest.approx(0.0, abs=1e-24)
    assert s.loss.value(s.theta0) > 0  # the default start is off the minimum
    sq = resolve_loss("sqrt-scalarnet:depth=2,eps=1e-6").loss
    assert isinstance(sq, SqrtLoss) and sq.eps == 1e-6 and isinstance(sq.base, ScalarNet)
    assert isinstance(resolve_loss("logistic-cubic").loss, LogisticCubic)
    assert isinstance(resolve_loss("zhu").loss, ZhuMinimalist)
    dl = resolve_loss("deeplinear:n=10,din=3,dout=2,widths=4,4,seed=1")
    assert dl.loss.dims == (3, 4, 4, 2)
    assert dl.loss.value(dl.minimizer) == pytest.approx(dl.loss.min_value, abs=1e-20)
    sy = resolve_loss("sympy:expr='(x*y-1)**2/2',vars=x y,min=0").loss
    assert sy.value([2.0, 1.0]) == pytest.approx(0.5)


def test_rule_specs_build_the_right_rules():
    from eosdyn.rules import DCAO, GD, Adam, EoSAda, HeavyBall, Nesterov, NormalizedGD

    assert rule_from_spec("gd:lr=0.19").hyperparameters() == GD(0.19).hyperparameters()
    assert rule_from_spec("hb:lr=0.1,beta=0.5").hyperparameters() == HeavyBall(0.1, 0.5).hyperparameters()
    assert rule_from_spec("nesterov:lr=0.1").hyperparameters() == Nesterov(0.1, 0.9).hyperparameters()
    assert isinstance(rule_from_spec("normalized-gd:lr=0.1"), NormalizedGD)
    a = rule_from_spec("adam:lr=0.01,beta1=0.8,beta2=0.99,eps=1e-6")
    assert a.hyperparameters() == Adam(0.01, betas=(0.8, 0.99), eps=1e-6).hyperparameters()
    e = rule_from_spec("eos-ada:alpha=1.5,curvature=exact")
    assert e.hyperparameters() == EoSAda(alpha=1.5, curvature="exact").hyperparameters()
    d = rule_from_spec("dcao:lr=0.1,lr_factor_range=0.5,3,k=3")
    assert d.hyperparameters() == DCAO(lr=0.1, lr_factor_range=(0.5, 3.0), k=3).hyperparameters()
    cls, step, kw, given_ = rule_family("heavyball:momentum=0.9")
    assert cls is HeavyBall and step == "lr" and kw == {"momentum": 0.9} and given_ is None
    cls, step, kw, given_ = rule_family("eosada:alpha=1.0,eps=0.1")
    assert cls is EoSAda and step == "alpha" and kw == {"eps": 0.1} and given_ == 1.0


@pytest.mark.parametrize("spec, must_contain", [
    ("quadratc:eigs=1", ["unknown loss", "quadratic", "scalarnet", "deeplinear", "cubic", "zhu", "sympy", "sqrt-"]),
    ("quadratic", ["needs parameter 'eigs'", "eigs"]),
    ("quadratic:eigs=1,foo=2", ["unknown parameter 'foo'", "eigs", "center"]),
    ("quadratic:eigs=a,b", ["must be a number"]),
    ("scalarnet:depth=2.5", ["must be an integer"]),
    ("scalarnet:depth=0", ["depth"]),
])
def test_bad_loss_specs(spec, must_contain):
    with pytest.raises(SpecError) as err:
        resolve_loss(spec)
    for s in must_contain:
        assert s in str(err.value)


@pytest.mark.parametrize("spec, must_contain", [
    ("sgdx:lr=0.1", ["unknown rule", "gd", "heavyball", "nesterov", "ngd", "adam", "eosada", "dcao"]),
    ("gd", ["needs parameter 'lr'"]),
    ("gd:lrr=0.1", ["unknown parameter 'lrr'", "lr (required"]),
    ("gd:lr=-1", ["lr must be", "(0, inf)"]),
    ("gd:lr=1,2", ["takes one value"]),
    ("heavyball:lr=0.1,momentum=1.5", ["momentum must be in"]),
    ("adam:lr=0.1,bias_correction=2", ["true or false"]),
    ("eosada:curvature=magic", ["curvature must be one of"]),
])
def test_bad_rule_specs(spec, must_contain):
    with pytest.raises(SpecError) as err:
        rule_from_spec(spec)
    for s in must_contain:
        assert s in str(err.value)


def test_registries_match_constructors():
    import inspect

    for name, e in RULES.items():
        sig = inspect.signature(e.extra["cls"].__init__)
        names = {p.name for p in e.params}
        expected = set(sig.parameters) - {"self"}
        if name == "adam":
            expected = (expected - {"betas"}) | {"beta1", "beta2"}
        assert names == expected, name
    assert {"quadratic", "scalarnet", "deeplinear", "cubic", "zhu", "sympy"} <= set(LOSSES)


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("args", [["--help"], ["figure", "--help"], ["simulate", "--help"], ["check", "--help"],
                                  ["check", "threshold", "--help"], ["bench", "--help"], ["sweep", "--help"],
                                  ["flow", "--help"]])
def test_help_everywhere(args):
    p = run(*args)
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout


def test_no_command_is_a_usage_error():
    p = run()
    assert p.returncode == 2
    assert "figure" in p.stdout and "simulate" in p.stdout


def test_simulate_readme_example(tmp_path):
    out = tmp_path / "run.nc"
    p = run("simulate", "--loss", "quadratic:eigs=10,1", "--rule", "gd:lr=0.19", "--steps", "1000",
            "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "did not diverge" in p.stdout
    assert re.search(r"sharpness λ₁ = 10\s+vs 2/η = 10\.5263", p.stdout)
    m = re.search(r"final loss\s+([0-9.e+-]+)", p.stdout)
    assert m and float(m.group(1)) < 1e-30
    import xarray as xr

    ds = xr.open_dataset(out)
    assert ds.sizes["step"] == 1001
    assert float(ds["sharpness"][-1]) == pytest.approx(10.0)
    assert ds.attrs["rule_spec"] == "gd:lr=0.19"
    ds.close()


def test_simulate_divergence_exits_1_with_reason():
    p = run("simulate", "--loss", "quadratic:eigs=10,1", "--rule", "gd:lr=0.21", "--steps", "1000")
    assert p.returncode == 1
    assert "DIVERGED at step" in p.stdout
    assert "diverged" in p.stderr and "2.1" in p.stderr
    p = run("simulate", "--loss", "quadratic:eigs=10,1", "--rule", "gd:lr=0.21", "--steps", "1000",
            "--allow-divergence", "--theta0", "1,1")
    assert p.returncode == 0


@pytest.mark.parametrize("args, expect", [
    (["--loss", "quadratc:eigs=10,1", "--rule", "gd:lr=0.1"], ["unknown loss", "quadratic", "scalarnet"]),
    (["--loss", "quadratic:eigs=10,1", "--rule", "gd:rate=0.1"], ["unknown parameter 'rate'", "lr"]),
    (["--loss", "quadratic:eigs=10,1", "--rule", "sgdx:lr=0.1"], ["unknown rule", "heavyball", "eosada", "dcao"]),
    (["--loss", "quadratic:eigs=10,1", "--rule", "gd:lr=0.1", "--theta0", "1", "2", "3"], ["--theta0 must have 2"]),
])
def test_simulate_bad_input_exits_2(args, expect):
    p = run("simulate", *args, "--steps", "10")
    assert p.returncode == 2
    for s in expect:
        assert s in p.stderr


def test_argparse_errors_exit_2():
    p = run("simulate", "--loss", "quadratic:eigs=1")  # --rule and --steps missing
    assert p.returncode == 2
    p = run("simulate", "--loss", "quadratic:eigs=1", "--rule", "gd:lr=1", "--steps", "many")
    assert p.returncode == 2


def test_check_threshold_heavyball():
    p = run("check", "threshold", "--loss", "quadratic:eigs=10,1", "--rule", "heavyball:momentum=0.9",
            "--steps", "2000")
    assert p.returncode == 0, p.stderr
    rows = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s+(theory|linearized|simulated)\b.*?\s([0-9.]+(?:e-?\d+)?)\s+([0-9.]+)\s*$", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    # closed form 2(1+β)/λ = 0.38; each ratio is printed against it
    assert rows["theory"] == (pytest.approx(0.38), pytest.approx(1.0))
    assert rows["linearized"][1] == pytest.approx(1.0, abs=1e-6)
    assert rows["simulated"][1] == pytest.approx(1.0, abs=2e-3)
    assert rows["simulated"][0] / 0.38 == pytest.approx(rows["simulated"][1], rel=1e-6)


def test_check_threshold_failures():
    p = run("check", "threshold", "--loss", "quadratic:eigs=10,1", "--rule", "ngd")
    assert p.returncode == 1 and "no linear threshold" in p.stderr
    p = run("check", "threshold", "--loss", "sympy:expr='x**2+y**2',vars=x y", "--rule", "gd")
    assert p.returncode == 2 and "--at" in p.stderr
    p = run("check", "threshold", "--loss", "quadratic:eigs=10,1", "--rule", "gd", "--at", "1", "1")
    assert p.returncode == 1 and "critical point" in p.stderr


def test_figure_list_and_unknown():
    from eosdyn.plot.registry import FIGURES

    p = run("figure", "--list")
    assert p.returncode == 0
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(FIGURES) == 11
    for f in FIGURES:
        assert f.name in p.stdout
    p = run("figure", "no-such-figure")
    assert p.returncode == 2 and "phase-plane" in p.stderr


def test_figure_runs_through_the_cli(tmp_path):
    p = run("figure", "bifurcation", "--quick", "--out", str(tmp_path), "--quiet")
    assert p.returncode == 0, p.stderr
    for ext in ("png", "pdf", "json"):
        assert (tmp_path / f"bifurcation.{ext}").stat().st_size > 0
    assert "[ok ]" in p.stdout


def test_bench(tmp_path):
    (tmp_path / "good.py").write_text(textwrap.dedent('''\
        """A benchmark that prints a ratio."""
        import sys
        print("ratio 1.0", "quick" if "--quick" in sys.argv else "full")
        '''))
    env = {"EOSDYN_BENCHMARKS_DIR": str(tmp_path)}
    p = run("bench", "--list", env=env)
    assert p.returncode == 0 and "good" in p.stdout and "prints a ratio" in p.stdout
    p = run("bench", env=env)
    assert p.returncode == 0 and "ratio 1.0 quick" in p.stdout
    p = run("bench", "--full", env=env)
    assert "ratio 1.0 full" in p.stdout
    (tmp_path / "bad.py").write_text("raise SystemExit(3)\n")
    p = run("bench", env=env)
    assert p.returncode == 1 and "bad (exit 3)" in p.stderr
    p = run("bench", "nope", env=env)
    assert p.returncode == 2


def test_sweep_is_delegated(tmp_path):
    p = run("sweep", "--status", str(tmp_path / "missing.zarr"))
    assert p.returncode == 2
    assert "eosdyn sweep" in p.stderr


def test_main_in_process(capsys):
    from eosdyn.cli import main

    assert main(["simulate", "--loss", "cubic", "--rule", "gd:lr=1.5", "--steps", "50", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "did not diverge" in out and "2/η = 1.33333" in out
    assert main(["simulate", "--loss", "cubic", "--rule", "gd:lr=0", "--steps", "5"]) == 2
    assert "lr must be" in capsys.readouterr().err


def test_simulation_in_calls_with_progress_equals_one_call():
    """The progress-bar path (simulate cut into kernel calls, reporting between them) is
    bit-identical to one call, for a run that diverges too."""
    import eosdyn
    from eosdyn.engine import run_map
    from eosdyn.losses import ScalarNet
    from eosdyn.rules import GD

    loss, rule = ScalarNet(2, 1.0), GD(0.3)
    one = eosdyn.simulate(loss, rule, [2.0, 0.3], 1000, record_every=10)
    seen = []
    parts = eosdyn.simulate(loss, rule, [2.0, 0.3], 1000, record_every=10, progress=lambda d, t: seen.append(d))
    assert seen[-1] == 1001
    for name in ("loss", "sharpness", "lr", "theta", "grad_norm"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(one, name))
    np.testing.assert_array_equal(parts.final_theta, one.final_theta)
    cut = run_map(loss, GD(3.0), np.array([[2.0, 0.3]]), 1000, record_every=10, records=("loss",),
                  blowup=1e6, max_call_steps=37)
    ref = eosdyn.simulate(loss, GD(3.0), [2.0, 0.3], 1000, record_every=10, blowup=1e6)
    assert ref.diverged and cut.fail_at[0] == ref.diverged_at
    np.testing.assert_array_equal(cut.records["loss"][0], ref.loss)
    np.testing.assert_array_equal(cut.thetas[0], ref.final_theta)