"""Sphinx configuration of the eosdyn API reference.

Build (warnings are errors, as in ``tests/test_docs.py``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is executed beyond importing eosdyn (autodoc): the notebooks are shown as source.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# autodoc imports eosdyn.plot (matplotlib) and eosdyn.bridge (torch): no display, no threads
os.environ.setdefault("MPLBACKEND", "Agg")

import eosdyn  # noqa: E402

project = "eosdyn"
author = "eosdyn developers"
copyright = "eosdyn developers (MIT licence)"
release = eosdyn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# -- autodoc: one entry per name in each subpackage's __all__ -------------------------------
autodoc_default_options = {
    "members": True,          # with __all__ defined, exactly the names it lists (imported ones included)
    "undoc-members": True,    # constants such as MAX_STEPS or METHODS have no docstring of their own
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "both"        # the class docstring and the __init__ docstring
autodoc_inherit_docstrings = True

# -- napoleon: the docstrings are numpydoc-style (Parameters / Returns with dashes) ---------
napoleon_numpy_docstring = True
napoleon_google_docstring = False   # free prose with "Note:" or "Returns:" lines must stay prose
napoleon_use_rtype = False
napoleon_use_param = False   # types such as "(n, d) array" stay text, not cross references
napoleon_use_ivar = True    # Attributes sections as fields: autodoc lists the attributes themselves
napoleon_preprocess_types = False
napoleon_attr_annotations = True

# -- cross references -----------------------------------------------------------------------
# The docstrings name numpy, scipy, torch and matplotlib objects and private helpers freely;
# an unresolved cross reference is not an error (only broken reST is).
nitpicky = False
# Type strings such as "(k,) array" are cross-referenced word by word; a bare word that names
# attributes of several classes ("k", "n", "dim") is ambiguous, which is noise, not an error.
suppress_warnings = ["ref.python"]
default_role = "code"      # `x` in a docstring is code (named objects use :func:, :class:, ...)


# -- HTML --------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"eosdyn {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Edge of Stability dynamics of gradient descent",
    "fixed_sidebar": True,
    "page_width": "1100px",
}


# -- docstrings are written in plain text with Unicode maths ------------------------------------
# |x| in them is an absolute value or a norm, never a reST substitution: escape the bars
# outside inline literals and literal blocks before docutils reads them.
import inspect  # noqa: E402
import re  # noqa: E402

_LITERAL = re.compile(r"(``.*?``|:[a-z:]+:`[^`]*`|`[^`]*`)")


def _escape_bars(line: str) -> str:
    parts = _LITERAL.split(line)
    return "".join(part if i % 2 else part.replace("|", r"\|") for i, part in enumerate(parts))


def _plain_text_bars(app, what, name, obj, options, lines):
    in_block, block_indent = False, 0
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if in_block:
            if stripped and indent <= block_indent:
                in_block = False
            else:
                continue
        if stripped.startswith(">>>") or stripped.startswith("..."):
            continue
        lines[i] = _escape_bars(line)
        if line.rstrip().endswith("::"):
            in_block, block_indent = True, indent


def _no_type_docstring(app, what, name, obj, options, lines):
    # a module constant (a dict, a tuple, an int) has no docstring of its own: autodoc would show
    # its type's ("dict() -> new empty dictionary ..."); the page says what the constant is instead
    if what in ("data", "attribute") and lines:
        own = inspect.getdoc(type(obj)) or ""
        if own and lines[0].strip() == own.splitlines()[0].strip():
            lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _no_type_docstring, priority=100)  # before napoleon
    app.connect("autodoc-process-docstring", _plain_text_bars)
