"""No string is ever run as code: loss expressions from the API, the command line and sweep
configs go through the whitelist parser of eosdyn.losses.symbolic (issue 17, "Security first").

Every hostile string below would have created the marker file (or worse) through sympy's
``parse_expr``; each must now raise a ValueError that names the offending token, and the
marker must not exist afterwards. Valid expressions must give the same loss as before.
"""
from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import sympy as sp

from eosdyn.losses import from_sympy, symbolic

# (template, token the message must name); {m} is the marker file
HOSTILE = [
    ("__import__('os').system('touch {m}')", "__import__"),
    ("x + __import__('os').system('touch {m}')", "__import__"),
    ("x.__class__", ".__class__"),
    ("x.__class__.__bases__[0].__subclasses__()", ".__class__"),
    ("().__class__.__base__.__subclasses__()", ".__class__"),
    ("x.real", ".real"),
    ("__builtins__", "__builtins__"),
    ("__import__", "__import__"),
    ("(lambda: __import__('os').system('touch {m}'))()", "lambda"),
    ("lambda x: x", "lambda"),
    ("import os", "import os"),
    ("open('{m}', 'w')", "open"),
    ("eval(\"__import__('os').system('touch {m}')\")", "eval"),
    ("exec(\"__import__('os').system('touch {m}')\")", "exec"),
    ("compile('1', 'f', 'eval')", "compile"),
    ("getattr(x, '__class__')", "getattr"),
    ("besselj(0, x)", "besselj"),
    ("Symbol('y')", "Symbol"),
    ("sympify('x')", "sympify"),
    ("f(x)", "f"),
    ("[c for c in ().__class__.__bases__]", "comprehension"),
    ("x[0]", "x[0]"),
    ("{'a': x}", "dict"),
    ("x if x else 1", "conditional"),
    ("(y := x)", ":="),
    ("f'{x}'", "f-string"),
    ("'touch {m}'", "'touch "),
    ("exp(x=1)", "x="),
    ("exp(*[x])", "*[x]"),
    ("exp(x)(x)", "exp(x)(x)"),
    ("exp", "exp"),
    ("exp(x, x)", "exp takes 1"),
    ("x ^ 2", "^"),
    ("x // 2", "//"),
    ("x > 0", ">"),
    ("x and 1", "and"),
    ("not x", "not"),
    ("1j*x", "1j"),
    ("I*x", "I"),
    ("True*x", "True"),
    ("x; __import__('os').system('touch {m}')", "could not be parsed"),
    ("x\n__import__('os').system('touch {m}')", "could not be parsed"),
]


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / f"pwned_{uuid.uuid4().hex[:6]}"
    yield m
    assert not m.exists(), f"a hostile expression created {m}"


# ----------------------------------------------------------------------------- API
@pytest.mark.parametrize("template, token", HOSTILE)
def test_hostile_expression_is_refused_naming_the_token(template, token, marker):
    expr = template.replace("{m}", str(marker))
    with pytest.raises(ValueError) as info:
        from_sympy(expr, ["x"])
    assert token in str(info.value), str(info.value)


def test_unknown_names_are_listed_with_the_allowed_ones(marker):
    with pytest.raises(ValueError) as info:
        from_sympy("a*x + os + oo", ["x"], params={"a": 1.0})
    msg = str(info.value)
    assert "['oo', 'os']" in msg and "'x'" in msg and "'a'" in msg and "pi" in msg and "exp" in msg


@pytest.mark.parametrize("expr, token", [
    ("x+" * 6000 + "x", "too long"),                         # over MAX_EXPR_CHARS
    ("exp(" * 150 + "x" + ")" * 150, "nested too deeply"),   # over MAX_EXPR_DEPTH
    # Python's own parser may give up first, or parse it and leave the depth check to refuse it
    ("-" * 5000 + "x", "could not be parsed|nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "could not be parsed|nested too deeply"),
    ("9**9**9**9", "9**9**9"),                               # would never finish
    ("2**(10**6)*x", "2**(10**6)"),
    ("sqrt(2)**(10**6)", "sqrt(2)**(10**6)"),
    ("x*2**4000*2**4000*2**4000", "2**4000"),
])
def test_very_long_deep_or_huge_input_is_refused_quickly(expr, token):
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as info:
        from_sympy(expr, ["x"])
    assert re.search(token, str(info.value)) if "|" in token else token in str(info.value)
    assert time.perf_counter() - t0 < 10.0


def test_no_string_reaches_sympys_parser(monkeypatch, marker):
    """Neither valid nor hostile strings are handed to sympify/parse_expr (which run code)."""
    import sympy.parsing.sympy_parser as sympy_parser

    core_sympify = sys.modules["sympy.core.sympify"]  # the module (sympy.core.sympify is also a function)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a string reached sympy's parser: {args[:1]!r}")

    real_sympify = core_sympify.sympify

    def sympify_no_strings(a, *args, **kwargs):
        if isinstance(a, str):
            forbidden(a)
        return real_sympify(a, *args, **kwargs)

    monkeypatch.setattr(sympy_parser, "parse_expr", forbidden)
    monkeypatch.setattr(sympy_parser, "eval_expr", forbidden)
    monkeypatch.setattr(core_sympify, "sympify", sympify_no_strings)
    monkeypatch.setattr(sp, "sympify", sympify_no_strings)
    monkeypatch.setattr(sp, "parse_expr", forbidden, raising=False)
    L = from_sympy("(x*y - c)**2/2 + 1e-3*log(1 + x**2) + pi*Abs(y)/7", "x y", {"c": 1.0})
    assert L.value([1.0, 1.0]) == pytest.approx(1e-3 * np.log(2.0) + np.pi / 7, rel=1e-15)
    for template, _ in HOSTILE:
        with pytest.raises(ValueError):
            from_sympy(template.replace("{m}", str(marker)), ["x"])


def test_symbolic_module_calls_no_evaluator():
    """Guard against regressions: the module never calls eval/exec/compile/sympify/parse_expr/S."""
    tree = ast.parse(inspect.getsource(symbolic))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert all("sympy_parser" not in (a.name or "") for a in node.names)
            assert "sympy_parser" not in (getattr(node, "module", "") or "")
    assert not called & {"eval", "exec", "compile", "sympify", "parse_expr", "S", "__import__"}


def test_valid_strings_build_the_same_expression_as_sympy_objects():
    x, y, a = sp.symbols("x y a", real=True)
    for text, obj in [
        ("a*x**2/2 + (x*y - 1)**2/2", a * x ** 2 / 2 + (x * y - 1) ** 2 / 2),
        ("x**(1/2) + y**-2 - -x + +y", sp.sqrt(x) + y ** -2 + x + y),
        ("0.5*x + 1e-3*y + .25", sp.Float("0.5") * x + sp.Float("1e-3") * y + sp.Float(".25")),
        ("log(2 + x**2, 2) + atan2(x, y) + Max(x, y, 0) + abs(y)",
         sp.log(2 + x ** 2, 2) + sp.atan2(x, y) + sp.Max(x, y, 0) + sp.Abs(y)),
        ("pi*x + E**y + sign(x)*Heaviside(y)", sp.pi * x + sp.exp(y) + sp.sign(x) * sp.Heaviside(y)),
    ]:
        L = from_sympy(text, [x, y], params={"a": 0.3})
        assert sp.srepr(L.expr) == sp.srepr(obj)


def test_sympy_objects_stay_accepted():
    x = sp.Symbol("x")
    with pytest.raises(ValueError, match="'erf' is not allowed"):
        from_sympy("erf(x) + x**2", ["x"])
    L = from_sympy(sp.erf(x) + x ** 2, [x])  # a sympy object built in Python is taken as it is
    assert L.grad([0.0])[0] == pytest.approx(2 / np.sqrt(np.pi), rel=1e-15)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("template, token", [
    ("__import__('os').system('touch {m}')", "__import__"),
    ("x.__class__", ".__class__"),
    ("(lambda: __import__('os').system('touch {m}'))()", "lambda"),
    ("open('{m}', 'w')", "open"),
    ("eval('1')", "eval"),
])
@pytest.mark.parametrize("command", [["simulate", "--steps", "3"], ["check", "threshold"]])
def test_cli_refuses_hostile_expression_with_exit_2(template, token, command, marker, capsys):
    from eosdyn.cli import main

    spec = f'sympy:expr="{template.replace("{m}", str(marker))}",vars=x'
    code = main([*command, "--loss", spec, "--rule", "gd:lr=0.1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert token in err and "--loss" in err


def test_cli_unknown_name_lists_the_allowed_ones(capsys):
    from eosdyn.cli import main

    assert main(["simulate", "--loss", "sympy:expr='x**2 + os',vars=x", "--rule", "gd:lr=0.1", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "['os']" in err and "'x'" in err


# ----------------------------------------------------------------------------- sweep TOML
POINT_FN = '''
from eosdyn.specs import loss_from_spec


def point(loss, x0):
    L = loss_from_spec(loss)
    return {"value": float(L.value([x0]))}
'''


def test_sweep_config_hostile_expression_fails_its_point_and_runs_nothing(tmp_path, marker, monkeypatch):
    from eosdyn.sweep import status
    from eosdyn.sweep.config import sweep_cli_main

    monkeypatch.setattr(sys, "path", list(sys.path))  # read_config puts the config's directory on sys.path
    name = f"secfns_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(POINT_FN)
    hostile = f"sympy:expr=\"__import__('os').system('touch {marker}')\",vars=x"
    cfg = tmp_path / "sec.toml"
    cfg.write_text(textwrap.dedent(f"""
        fn = "{name}:point"
        store = "runs/sec.zarr"
        n_workers = 1
        [grid]
        loss = [{json.dumps(hostile)}, "sympy:expr='x**2/2',vars=x"]
        x0 = [3.0]
    """))
    try:
        assert sweep_cli_main([str(cfg), "--quiet"]) == 1  # one point failed, the other done
        st = status(tmp_path / "runs" / "sec.zarr")
    finally:
        sys.modules.pop(name, None)
    assert st["done"] == 1 and st["failed"] == 1
    (failure,) = st["failures"]
    assert "__import__" in failure["error"] and "not allowed" in failure["error"]


def test_sweep_config_fn_may_not_name_dunder_attributes(tmp_path, capsys, monkeypatch):
    from eosdyn.sweep.config import sweep_cli_main

    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = tmp_path / "dunder.toml"
    cfg.write_text('fn = "eosdyn:__class__.__call__"\nstore = "x"\n[grid]\na = [1]\n')
    assert sweep_cli_main([str(cfg)]) == 2
    assert "'__class__'" in capsys.readouterr().err
