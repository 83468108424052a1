r"""Spec strings for losses and update rules: the one parser behind the ``eosdyn`` command line.

A *spec* names a loss or a rule and sets its parameters in one shell word::

    quadratic:eigs=10,1                 Quadratic(eigs=[10, 1])
    gd:lr=0.19                          GD(lr=0.19)
    heavyball:lr=0.1,momentum=0.9       HeavyBall(lr=0.1, momentum=0.9)
    scalarnet:depth=2,target=1          ScalarNet(depth=2, target=1.0)
    sqrt-scalarnet:depth=2,eps=1e-12    SqrtLoss(ScalarNet(2, 1.0), eps=1e-12)

Grammar
-------
::

    spec   := NAME [ ":" params ]
    params := param ( ("," | ";") param )*
    param  := KEY "=" value
    value  := items | "[" items "]" | QUOTED
    items  := item ( ("," | " ") item )*
    item   := number | true | false | none | word

Commas separate both parameters and the items of a list. The rule that resolves it:
**a comma-separated piece that does not start with ``KEY=`` continues the list of the
parameter before it**. So ``eigs=10,1,center=0,0`` is ``eigs=[10, 1]``,
``center=[0, 0]``. The same list can be written ``eigs=[10,1]`` or ``eigs=10 1``
(quote the spec in the shell), and ``;`` may separate parameters where that reads
better (``eigs=10,1;center=0,0``). A value in double or single quotes is kept as one
string, commas included (``sympy:expr="(x*y-1)**2/2",vars=x y``). Keys are
case-insensitive and ``-`` in a key means ``_``.

A **text** parameter (kind ``str``: the sympy loss's ``expr``) takes its value verbatim, up
to the next ``,KEY=`` or ``;``: it is never split at spaces or turned into a number, so
``sympy:expr=x**2 + 3*y**2,vars=x y`` is the expression ``x**2 + 3*y**2`` (quote the whole
spec in the shell: ``--loss "sympy:expr=x**2 + 3*y**2,vars=x y"``). Quote the expression
itself only if it contains a comma outside brackets or a ``;``. The text is then parsed
by sympy's whitelisted parser (:func:`eosdyn.losses.from_sympy`), never evaluated.

Each parameter has a kind (float, int, bool, str, list of floats, …) and its default is
read from the class constructor, so the help text never disagrees with the code. A
bad spec — unknown name, unknown or missing parameter, a value of the wrong kind, or
a value the constructor rejects — raises :class:`SpecError` (a ``ValueError``) whose
message lists the valid names or that entry's parameters.

Public API: :func:`parse_spec`, :func:`loss_from_spec`, :func:`resolve_loss`
(loss + default start + a minimiser), :func:`rule_from_spec`, :func:`rule_family`
(a rule's class and its non-step keyword arguments, for threshold analysis),
:func:`format_spec`, :func:`describe_losses`, :func:`describe_rules`, ``LOSSES``, ``RULES``.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SpecError", "Param", "Entry", "LossSpec", "LOSSES", "RULES", "parse_spec", "format_spec",
    "loss_from_spec", "resolve_loss", "rule_from_spec", "rule_family", "describe_losses",
    "describe_rules", "loss_names", "rule_names",
]


class SpecError(ValueError):
    """A spec string that cannot be turned into a loss or a rule (the message says why and what is valid)."""


# ----------------------------------------------------------------------------- tokenizer
_KEY_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*=(.*)$", re.S)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-+.]*$")


def _split_top(text: str, seps: str) -> list[str]:
    """Split on characters of ``seps`` outside quotes and brackets."""
    out, buf, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
            buf.append(ch)
        elif ch in "[(":
            depth += 1
            buf.append(ch)
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced '{ch}' in {text!r}")
            buf.append(ch)
        elif ch in seps and depth == 0:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise SpecError(f"unterminated quote {quote} in {text!r}")
    if depth:
        raise SpecError(f"unbalanced brackets in {text!r}")
    out.append("".join(buf))
    return out


def _atom(tok: str):
    """A scalar token -> int, float, bool, None or str."""
    t = tok.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def _value(raw: str):
    """A raw value string -> scalar or list (brackets, commas or whitespace make a list)."""
    v = raw.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    bracket = len(v) >= 2 and ((v[0] == "[" and v[-1] == "]") or (v[0] == "(" and v[-1] == ")"))
    if bracket:
        v = v[1:-1]
    items = [p for p in re.split(r"[,\s]+", v.strip()) if p != ""] if v.strip() else []
    if bracket or len(items) != 1:
        return [_atom(p) for p in items]
    return _atom(items[0])


def parse_spec(text: str) -> tuple[str, dict]:
    """``"name:k=v,..."`` -> (name in lower case, {key: value}) without checking the names.

    Values are int, float, bool, None, str, or lists of those (see the module grammar).
    Raises :class:`SpecError` for an empty name, a piece that is neither ``KEY=value``
    nor the continuation of a list, or a key given twice.
    """
    name, params, _ = _parse(text)
    return name, params


def _text_value(raw: str) -> str:
    """The value of a text parameter (kind ``str``, e.g. a sympy expression): the raw text after
    ``KEY=`` with its outer whitespace stripped and one pair of enclosing quotes removed. Spaces
    inside are kept (``expr=x**2 + 3*y**2``), and nothing is split or converted."""
    v = raw.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def _parse(text: str) -> tuple[str, dict, dict]:
    """(name, parsed values, raw value texts) of a spec; see :func:`parse_spec`."""
    if not isinstance(text, str):
        raise SpecError(f"a spec must be a string like 'gd:lr=0.1', got {type(text).__name__}")
    name, sep, rest = text.strip().partition(":")
    name = name.strip().lower()
    if not name or not _NAME_RE.match(name):
        raise SpecError(f"spec {text!r} must start with a name, as in 'gd:lr=0.1' or 'quadratic:eigs=10,1'")
    params: dict[str, Any] = {}
    raw: dict[str, str] = {}
    order: list[str] = []
    if sep and rest.strip():
        groups = _split_top(rest, ";")
        for k, group in enumerate(groups):
            if not group.strip():
                if k == len(groups) - 1 and k > 0 and groups[k - 1].strip():
                    continue  # one trailing ';' is harmless
                raise SpecError(f"spec {text!r} has an empty parameter group (';;' or a leading ';'): "
                                "write NAME:key=value,key=value or separate groups by one ';'")
            current = None
            for piece in _split_top(group, ","):
                m = _KEY_RE.match(piece)
                if m:
                    key = m.group(1).lower().replace("-", "_")
                    if key in raw:
                        raise SpecError(f"parameter {key!r} is given twice in spec {text!r}")
                    raw[key] = m.group(2)
                    order.append(key)
                    current = key
                elif current is None:
                    raise SpecError(f"in spec {text!r}: expected KEY=value, got {piece.strip()!r}")
                else:
                    raw[current] += "," + piece
    for key in order:
        if raw[key].strip() == "":
            raise SpecError(f"parameter {key!r} has no value in spec {text!r}")
        params[key] = _value(raw[key])
    return name, params, raw


def _fmt_item(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if re.search(r"[,;\s\[\]=\"]", s):
        return "'" + s + "'"
    return s


def format_spec(name: str, params: dict | None = None) -> str:
    """The inverse of :func:`parse_spec`: lists as ``[a,b]``, parameters joined by ``,``."""
    parts = []
    for k, v in (params or {}).items():
        if isinstance(v, (list, tuple, np.ndarray)):
            parts.append(f"{k}=[" + ",".join(_fmt_item(x) for x in v) + "]")
        else:
            parts.append(f"{k}={_fmt_item(v)}")
    return name + (":" + ",".join(parts) if parts else "")


# ----------------------------------------------------------------------------- registries
_REQUIRED = inspect.Parameter.empty

KINDS = ("float", "int", "bool", "str", "floats", "ints", "strs", "optfloat")


@dataclass(frozen=True)
class Param:
    """One parameter of a spec entry: ``kind`` in KINDS, ``default`` (``_REQUIRED`` if none)."""

    name: str
    kind: str
    default: Any = _REQUIRED
    help: str = ""
    aliases: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        if self.required:
            return f"{self.name} (required, {self.kind})"
        d = self.default
        if isinstance(d, tuple):
            d = list(d)
        return f"{self.name}={d}"


@dataclass(frozen=True)
class Entry:
    """A named loss or rule: its aliases, one-line summary, parameters and builder."""

    name: str
    summary: str
    params: tuple
    build: Callable[[dict], Any]
    aliases: tuple = ()
    extra: dict = field(default_factory=dict)

    def param(self, key):
        for p in self.params:
            if key == p.name or key in p.aliases:
                return p
        return None

    def describe(self) -> str:
        ps = ", ".join(p.describe() for p in self.params) or "no parameters"
        al = f" (also: {', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name}{al}: {self.summary}. Parameters: {ps}"


def _coerce(entry_kind: str, entry: Entry, p: Param, value, spec: str):
    where = f"parameter {p.name!r} of {entry_kind} {entry.name!r} (spec {spec!r})"

    def num(v, integer=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpecError(f"{where} must be {'an integer' if integer else 'a number'}, got {v!r}")
        if integer:
            if isinstance(v, float) and not v.is_integer():
                raise SpecError(f"{where} must be an integer, got {v!r}")
            return int(v)
        return float(v)

    k = p.kind
    if k in ("floats", "ints", "strs"):
        items = value if isinstance(value, list) else [value]
        if not items:
            raise SpecError(f"{where} must be a non-empty list")
        if k == "strs":
            return [str(x) for x in items]
        return [num(x, integer=(k == "ints")) for x in items]
    if isinstance(value, list):
        raise SpecError(f"{where} takes one value, got the list {value!r}")
    if k == "float":
        return num(value)
    if k == "optfloat":
        return None if value is None else num(value)
    if k == "int":
        return num(value, integer=True)
    if k == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"{where} must be true or false, got {value!r}")
        return value
    if k == "str":
        return str(value)
    raise AssertionError(k)


def _resolve(table: dict, kind: str, text: str, *, skip_required: tuple = ()) -> tuple[Entry, dict]:
    name, params, raw = _parse(text)
    entry = _lookup(table, kind, name, text)
    out = {}
    for key, value in params.items():
        p = entry.param(key)
        if p is None:
            raise SpecError(f"unknown parameter {key!r} for {kind} {entry.name!r} (spec {text!r}). "
                            f"Valid parameters of {entry.name}: "
                            f"{', '.join(q.describe() for q in entry.params) or 'none'}")
        if p.name in out:
            raise SpecError(f"parameter {p.name!r} is given twice (through an alias) in spec {text!r}")
        if p.kind == "str":  # text is taken verbatim: spaces kept, not split into a list
            value = _text_value(raw[key])
        out[p.name] = _coerce(kind, entry, p, value, text)
    for p in entry.params:
        if p.required and p.name not in out and p.name not in skip_required:
            raise SpecError(f"{kind} {entry.name!r} needs parameter {p.name!r} (spec {text!r}), e.g. "
                            f"{entry.extra.get('example', entry.name + ':' + p.name + '=...')}. "
                            f"Valid parameters of {entry.name}: "
                            f"{', '.join(q.describe() for q in entry.params)}")
    return entry, out


def _lookup(table: dict, kind: str, name: str, text: str) -> Entry:
    if kind == "rule":  # the one registry resolves rule names and aliases
        from .rules.registry import rule_class

        try:
            cls = rule_class(name)
        except ValueError as exc:
            raise SpecError(f"{exc} (spec {text!r}). Valid rules: "
                            + "; ".join(e.describe() for e in table.values())) from None
        if cls.name not in table:  # a rule registered after this module was imported
            table[cls.name] = _rule_entry(cls)
        return table[cls.name]
    for e in table.values():
        if name == e.name or name in e.aliases:
            return e
    if kind == "loss" and (name.startswith("sqrt-") or name.startswith("sqrt_")):
        base = _lookup(table, kind, name[5:], text)
        return _sqrt_entry(base)
    valid = "; ".join(e.describe() for e in table.values())
    extra = " Any loss may be wrapped as sqrt-NAME (√(L − L* + eps), parameter eps)." if kind == "loss" else ""
    plural = "losses" if kind == "loss" else "rules"
    raise SpecError(f"unknown {kind} {name!r} in spec {text!r}. Valid {plural}: {valid}.{extra}")


def _build(kind, entry, kwargs, text):
    try:
        return entry.build(dict(kwargs))
    except SpecError:
        raise
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{kind} spec {text!r}: {exc}. Valid parameters of {entry.name}: "
                        f"{', '.join(p.describe() for p in entry.params)}") from None


# ----------------------------------------------------------------------------- losses
def _quadratic(kw):
    from .losses import Quadratic

    return Quadratic(eigs=kw["eigs"], center=kw.get("center"))


def _scalarnet(kw):
    from .losses import ScalarNet

    return ScalarNet(kw.get("depth", 2), kw.get("target", 1.0))


def _deeplinear_data(kw):
    n, din, dout = kw.get("n", 20), kw.get("din", 3), kw.get("dout", 2)
    for key, v in (("n", n), ("din", din), ("dout", dout)):
        if v < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {v}")
    rng = np.random.default_rng(kw.get("seed", 0))
    X = rng.standard_normal((n, din))
    A = rng.standard_normal((din, dout))
    return X, X @ A


def _deeplinear(kw):
    from .losses import DeepLinear

    X, Y = _deeplinear_data(kw)
    return DeepLinear(X, Y, kw.get("widths", [4]))


def _cubic(kw):
    from .losses import LogisticCubic

    return LogisticCubic()


def _zhu(kw):
    from .losses import ZhuMinimalist

    return ZhuMinimalist()


def _sympy(kw):
    from .losses import from_sympy

    mv = kw.get("min")
    return from_sympy(kw["expr"], kw["vars"], min_value=float("nan") if mv is None else mv)


def _theta_scalarnet(loss, kw):
    w = loss.balanced_minimum()
    w[0] *= 1.5
    return w


def _theta_deeplinear(loss, kw):
    rng = np.random.default_rng(kw.get("seed", 0) + 1)
    return loss.minimizer() + 0.3 * rng.standard_normal(loss.dim)


LOSSES: dict[str, Entry] = {
    "quadratic": Entry(
        "quadratic", "½(θ−c)ᵀdiag(eigs)(θ−c); L* = 0, sharpness max(eigs)",
        (Param("eigs", "floats", help="Hessian eigenvalues"),
         Param("center", "floats", None, help="minimiser c (default 0)")),
        _quadratic, aliases=("quad",),
        extra={"example": "quadratic:eigs=10,1",
               "theta0": lambda loss, kw: loss.center + 1.0,
               "minimizer": lambda loss, kw: loss.center.copy()}),
    "scalarnet": Entry(
        "scalarnet", "½(w₁⋯w_D − y)²: a manifold of minima of varying sharpness",
        (Param("depth", "int", 2), Param("target", "float", 1.0, aliases=("y",))),
        _scalarnet, aliases=("scalar-net", "scalar_net"),
        extra={"theta0": _theta_scalarnet,
               "minimizer": lambda loss, kw: loss.balanced_minimum()}),
    "deeplinear": Entry(
        "deeplinear", "deep linear net ½ mean‖W_N⋯W₁x − y‖² on random Gaussian data y = Ax",
        (Param("n", "int", 20), Param("din", "int", 3), Param("dout", "int", 2),
         Param("widths", "ints", (4,)), Param("seed", "int", 0)),
        _deeplinear, aliases=("deep-linear", "deep_linear", "linear-net"),
        extra={"theta0": _theta_deeplinear,
               "minimizer": lambda loss, kw: loss.minimizer()}),
    "cubic": Entry(
        "cubic", "x²/2 − x³/3: GD on it is the logistic map with r = 1 + η",
        (), _cubic, aliases=("logistic-cubic", "logistic_cubic", "logistic"),
        extra={"theta0": lambda loss, kw: np.array([0.1]),
               "minimizer": lambda loss, kw: np.array([0.0])}),
    "zhu": Entry(
        "zhu", "¼(x²y² − 1)²: the minimalist EoS example of Zhu et al. (ICLR 2023)",
        (), _zhu, aliases=("zhu-minimalist", "zhu_minimalist", "minimalist"),
        extra={"theta0": lambda loss, kw: np.array([2.0, 0.6]),
               "minimizer": lambda loss, kw: np.array([1.0, 1.0])}),
    "sympy": Entry(
        "sympy", "any loss written as a sympy expression, differentiated exactly",
        (Param("expr", "str"), Param("vars", "strs"), Param("min", "optfloat", None)),
        _sympy, aliases=("expr",),
        extra={"example": "sympy:expr='(x*y-1)**2/2',vars=x y",
               "theta0": lambda loss, kw: np.ones(loss.dim),
               "minimizer": None}),
}


def _sqrt_entry(base: Entry) -> Entry:
    def build(kw):
        from .losses import SqrtLoss

        eps = kw.pop("eps", 0.0)
        return SqrtLoss(base.build(kw), eps=eps)

    extra = dict(base.extra)
    for key in ("theta0", "minimizer"):
        f = base.extra.get(key)
        if f is not None:
            extra[key] = (lambda g: lambda loss, kw: g(loss.base, kw))(f)
    return Entry("sqrt-" + base.name, f"√(L − L* + eps) of {base.name} (Arora, Li & Panigrahi 2022)",
                 base.params + (Param("eps", "float", 0.0),), build,
                 aliases=tuple("sqrt-" + a for a in base.aliases) + ("sqrt_" + base.name,), extra=extra)


@dataclass
class LossSpec:
    """A resolved loss spec: the ``loss``, its ``name`` and ``params``, a default start
    ``theta0`` (off the minimum) and a ``minimizer`` (None when the spec cannot know one)."""

    text: str
    name: str
    params: dict
    loss: Any
    theta0: np.ndarray
    minimizer: np.ndarray | None


def resolve_loss(text: str) -> LossSpec:
    """Parse a loss spec into a :class:`LossSpec` (loss, default start, minimiser)."""
    entry, kw = _resolve(LOSSES, "loss", text)
    loss = _build("loss", entry, kw, text)
    t0 = entry.extra.get("theta0")
    mn = entry.extra.get("minimizer")
    theta0 = np.asarray(t0(loss, kw), float) if t0 else np.ones(loss.dim)
    minimizer = np.asarray(mn(loss, kw), float) if mn else None
    return LossSpec(text=text, name=entry.name, params=kw, loss=loss, theta0=theta0, minimizer=minimizer)


def loss_from_spec(text: str):
    """The :class:`~eosdyn.losses.Loss` a spec names, e.g. ``loss_from_spec("quadratic:eigs=10,1")``."""
    return resolve_loss(text).loss


# ----------------------------------------------------------------------------- rules
def _kind_of(cls, name, default):
    kinds = cls.spec_kinds
    if name in kinds and isinstance(kinds[name], str):
        return kinds[name]
    if default is _REQUIRED:
        return "float"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, tuple):
        return "floats"
    return "float"


def _rule_build(cls, kw):
    """cls(**kw) after folding split parameters back (Adam's beta1, beta2 -> betas) and turning
    lists into the tuples the constructors take."""
    kw = dict(kw)
    sig = inspect.signature(cls.__init__).parameters
    for pname, parts in cls.spec_kinds.items():
        if isinstance(parts, tuple):
            default = sig[pname].default
            kw[pname] = tuple(kw.pop(k, default[i]) for i, k in enumerate(parts))
    for pname, v in list(kw.items()):
        if isinstance(v, list) and isinstance(sig[pname].default, tuple):
            kw[pname] = tuple(v)
    return cls(**kw)


def _rule_entry(cls) -> Entry:
    """The spec entry of a registered rule class: everything is read from the class."""
    params = []
    for pname, prm in inspect.signature(cls.__init__).parameters.items():
        if pname == "self":
            continue
        split = cls.spec_kinds.get(pname)
        if isinstance(split, tuple):
            params += [Param(k, "float", prm.default[i]) for i, k in enumerate(split)]
            continue
        al = ("beta",) if pname == "momentum" else ()
        params.append(Param(pname, _kind_of(cls, pname, prm.default), prm.default, aliases=al))
    step = cls.step_parameter
    return Entry(cls.name, cls.summary, tuple(params), lambda kw, cls=cls: _rule_build(cls, kw),
                 aliases=tuple(cls.aliases), extra={"cls": cls, "step": step, "example": f"{cls.name}:{step}=0.1"})


def _rule_entries() -> dict[str, Entry]:
    from .rules import rules

    return {name: _rule_entry(cls) for name, cls in rules().items()}


RULES: dict[str, Entry] = _rule_entries()


def rule_from_spec(text: str):
    """The :class:`~eosdyn.rules.Rule` a spec names, e.g. ``rule_from_spec("heavyball:lr=0.1,momentum=0.9")``."""
    entry, kw = _resolve(RULES, "rule", text)
    return _build("rule", entry, kw, text)


def rule_family(text: str) -> tuple[type, str, dict, float | None]:
    """A rule spec whose step size may be left out, for threshold analysis.

    Returns (rule class, step-parameter name — ``lr``, or ``alpha`` for EoS-Ada —,
    the other keyword arguments as the constructor takes them, the step value if the spec
    gave one else None). The keyword arguments are validated by building the rule once.
    """
    entry, kw = _resolve(RULES, "rule", text, skip_required=("lr",))
    step = entry.extra["step"]
    given = kw.pop(step, None)
    probe = dict(kw)
    probe[step] = given if given is not None else 1.0
    rule = _build("rule", entry, probe, text)
    cls = entry.extra["cls"]
    full = rule.hyperparameters()
    sig = inspect.signature(cls.__init__).parameters
    out = {}
    for pname in sig:
        if pname in ("self", step):
            continue
        split = cls.spec_kinds.get(pname)
        if isinstance(split, tuple) and any(k in kw for k in split):
            out[pname] = tuple(full[pname]) if pname in full else None
        elif pname in kw:
            v = kw[pname]
            out[pname] = tuple(v) if isinstance(v, list) and isinstance(sig[pname].default, tuple) else v
    return cls, step, out, given


def loss_names() -> list[str]:
    return list(LOSSES)


def rule_names() -> list[str]:
    return list(RULES)


def describe_losses() -> str:
    """One line per loss: name, aliases, summary, parameters with defaults."""
    lines = [f"  {e.describe()}" for e in LOSSES.values()]
    lines.append("  sqrt-NAME: √(L − L* + eps) of any loss above (parameters: its own plus eps=0.0)")
    return "\n".join(lines)


def describe_rules() -> str:
    """One line per rule: name, aliases, summary, parameters with defaults."""
    return "\n".join(f"  {e.describe()}" for e in RULES.values())
