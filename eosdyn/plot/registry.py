"""The reproduced figures, found by reading the scripts in ``figures/``.

``eosdyn figure NAME`` and ``eosdyn figure --list`` read it. Each script ``figures/*.py``
(except helpers whose name starts with ``_``) describes itself in module-level constants:

``NAME``         the figure's name on the command line, lower case with dashes (``"phase-plane"``);
``NUMBER``       its number, a positive int: the order of ``--list`` and another way to name it;
``DESCRIPTION``  one line for ``--list``;
``NEEDS``        optional, the modules it imports beyond the core (``("torch", "eosdyn.bridge")``).

Each defines ``main(argv) -> dict`` (the JSON it wrote) and takes ``--quick``, ``--out DIR``
and ``--quiet``; it also runs on its own (``python figures/fig7_phase_plane.py --quick``).
So a new figure is one new script: nothing here restates its name or description.

The constants are read with :mod:`ast`, not by importing the scripts, so listing the
figures neither imports torch nor runs anything; the values must therefore be literals.
A script that lacks one, or whose value is malformed, raises :class:`FigureScriptError`
naming the script.

The scripts live in the source tree, not in the installed package: they are found in
``$EOSDYN_FIGURES_DIR`` if set, else in the ``figures/`` directory next to the ``eosdyn``
package (a source checkout or an editable install).
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FigureInfo", "FigureScriptError", "figures", "figures_dir", "find_figure", "load_figure_module",
           "run_figure", "FIGURES"]  # noqa: F822 - FIGURES is a module __getattr__, read on demand

#: What ``NAME`` must look like: what :func:`find_figure` reduces a name typed by a user to.
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
#: Words of the ``eosdyn figure`` command that cannot be a figure's name.
_RESERVED_NAMES = frozenset({"all"})


@dataclass(frozen=True)
class FigureInfo:
    """One figure script, as its constants describe it (``script`` is the file name)."""

    number: int
    name: str
    script: str
    description: str
    needs: tuple = ()


class FigureScriptError(ValueError):
    """A figure script does not describe itself as :mod:`eosdyn.plot.registry` requires."""


def figures_dir() -> Path:
    """Where the figure scripts are ($EOSDYN_FIGURES_DIR, else ``<repo>/figures``)."""
    env = os.environ.get("EOSDYN_FIGURES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "figures"


# ----------------------------------------------------------------------------- reading the scripts
def _literal_constants(path: Path) -> dict:
    """The module-level ``NAME = literal`` assignments of a script (the last one wins, as at run
    time); a value that is not a literal is kept as the ``ast`` node, for the error message."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise FigureScriptError(f"figure script {path} cannot be parsed: {exc}") from None
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                constants[target.id] = ast.literal_eval(value)
            except ValueError:
                constants[target.id] = value
    return constants


def _figure_info(path: Path) -> FigureInfo:
    """Read and check the constants of one script."""
    constants = _literal_constants(path)

    def constant(key, what, ok, required=True, default=None):
        if key not in constants:
            if required:
                raise FigureScriptError(f"figure script {path} does not define {key}, which must be {what}")
            return default
        value = constants[key]
        if isinstance(value, ast.AST):
            raise FigureScriptError(f"figure script {path}: {key} must be a literal ({what}), not computed "
                                    f"({ast.unparse(value)}): the registry reads it without running the script")
        if not ok(value):
            raise FigureScriptError(f"figure script {path}: {key} must be {what}, got {value!r}")
        return value

    name = constant("NAME", "a str in lower case with dashes, e.g. 'phase-plane'",
                    lambda v: isinstance(v, str) and _NAME_PATTERN.fullmatch(v) is not None
                    and v not in _RESERVED_NAMES)
    number = constant("NUMBER", "a positive int",
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    description = constant("DESCRIPTION", "a non-empty str of one line",
                           lambda v: isinstance(v, str) and v.strip() != "" and "\n" not in v)
    needs = constant("NEEDS", "a tuple of module names, e.g. ('torch', 'eosdyn.bridge')",
                     lambda v: isinstance(v, (tuple, list)) and all(isinstance(m, str) and m for m in v),
                     required=False, default=())
    return FigureInfo(number, name, path.name, description, tuple(needs))


@functools.lru_cache(maxsize=8)
def _read_scripts(directory: Path, stamps: tuple) -> tuple:
    """The figures of ``directory``, by number. ``stamps`` (each script's name, mtime and
    size) is the cache key: a script edited since the last call is read again."""
    infos = sorted((_figure_info(directory / name) for name, _, _ in stamps), key=lambda f: f.number)
    for key in ("number", "name"):
        seen = {}
        for info in infos:
            other = seen.setdefault(getattr(info, key), info)
            if other is not info:
                raise FigureScriptError(f"figure scripts {directory / other.script} and {directory / info.script} "
                                        f"have the same {key.upper()} {getattr(info, key)!r}")
    return tuple(infos)


def figures() -> tuple:
    """Every figure in :func:`figures_dir`, ordered by number (empty if the directory is absent)."""
    directory = figures_dir()
    scripts = sorted(directory.glob("*.py")) if directory.is_dir() else []
    stamps = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in scripts if not p.name.startswith("_"))
    return _read_scripts(directory, stamps)


def __getattr__(attr):
    # ``FIGURES`` is read from the scripts when it is asked for, so that importing this
    # module reads no file and a script edited since is seen.
    if attr == "FIGURES":
        return figures()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# ----------------------------------------------------------------------------- finding and running
def find_figure(name) -> FigureInfo:
    """A figure by name (``phase-plane``), number (``7``) or script stem (``fig7_phase_plane``)."""
    key = str(name).strip().lower().replace("_", "-")
    known = figures()
    for f in known:
        if key in (f.name, str(f.number), f"fig{f.number}", Path(f.script).stem.replace("_", "-")):
            return f
    if not known:
        raise ValueError(f"unknown figure {name!r}: there are no figure scripts in {figures_dir()} (figures "
                         "live in the source tree: run from a checkout, or set EOSDYN_FIGURES_DIR)")
    valid = ", ".join(f"{f.name} ({f.number})" for f in known)
    raise ValueError(f"unknown figure {name!r}; valid names: {valid}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package of a dotted name is missing
        return False


def load_figure_module(name):
    """Import a figure script as a module (it must define ``main(argv) -> dict``).

    Raises ImportError naming the figure and the module when one of its ``NEEDS`` is not
    installed, before the script runs.
    """
    info = find_figure(name)
    path = figures_dir() / info.script
    if not path.is_file():
        raise FileNotFoundError(
            f"figure script {path} not found: figures live in the source tree (run from a checkout, "
            f"or set EOSDYN_FIGURES_DIR)")
    for module in info.needs:
        if not _installed(module):
            raise ImportError(f"figure {info.name} needs {module}, which is not installed", name=module)
    modname = f"eosdyn_figure_{info.number}"
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


def run_figure(name, *, quick: bool = False, out="eosdyn_figures", quiet: bool = False) -> dict:
    """Run one figure script in this process; returns the JSON dict it wrote."""
    mod = load_figure_module(name)
    argv = ["--out", str(out)] + (["--quick"] if quick else []) + (["--quiet"] if quiet else [])
    return mod.main(argv)
