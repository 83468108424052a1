"""Parameter grids: validation, enumeration and a canonical JSON form.

A grid is either

* a mapping ``name -> values``: the Cartesian product of the value lists, enumerated
  in C order (the last name varies fastest, as ``itertools.product``). Point ``i``
  is the ``i``-th element of that product, and the result dataset has one
  dimension per name, in the mapping's order; or
* a sequence of point mappings (an explicit list): point ``i`` is ``grid[i]``, every
  point must name the same parameters, and the result has a single ``point``
  dimension with one coordinate per parameter along it.

Parameter values must be scalars (bool, int, float, str, or their numpy types)
so that they can be recorded exactly in the store's JSON manifest and used as
coordinate labels. Structured inputs (an initial vector, a loss object) should be
selected inside ``fn`` from a scalar key.
"""
from __future__ import annotations

import itertools
import json
import keyword
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: Names the sweep itself uses in the result dataset.
RESERVED = frozenset({"point", "sweep_status", "sweep_error", "sweep_start", "sweep_end", "sweep_duration"})


def _scalar(where: str, v):
    """``v`` as a plain JSON-able Python scalar, or TypeError naming ``where``."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    raise TypeError(
        f"{where} must be a scalar (bool, int, float or str), got {type(v).__name__} {v!r}; "
        "select structured inputs inside fn from a scalar key"
    )


def _check_name(where: str, name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{where}: parameter names must be str, got {type(name).__name__} {name!r}")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{where}: parameter name {name!r} is not a valid Python identifier "
                         "(it is passed as fn(**point))")
    if name in RESERVED:
        raise ValueError(f"{where}: parameter name {name!r} is reserved by the sweep; "
                         f"reserved names: {sorted(RESERVED)}")
    return name


def _check_distinct_labels(name: str, values: list) -> None:
    """Refuse two values of dimension ``name`` that would get the same label.

    The labels are the dimension's coordinate, ``np.asarray(values)``: ``[1, 1.0]``
    becomes ``[1.0, 1.0]``, ``[True, 1]`` becomes ``[1, 1]`` and ``[1, "1"]`` becomes
    ``["1", "1"]``. Two points with one label cannot be told apart by ``ds.sel``, and
    Python's equality (``1 == 1.0 == True``) would merge them as keys of a dict.
    """
    labels = [json.dumps(label) for label in np.asarray(values).tolist()]
    first_with_label: dict = {}
    for k, label in enumerate(labels):
        j = first_with_label.setdefault(label, k)
        if j == k:
            continue
        a, b = values[j], values[k]
        if json.dumps(a) == json.dumps(b):
            raise ValueError(
                f"grid[{name!r}] has the duplicate value {a!r}: grid values label a dimension and must be unique"
            )
        raise ValueError(
            f"grid[{name!r}] has the values {a!r} and {b!r} (positions {j} and {k}), which collide as the label "
            f"{json.loads(label)!r} of dimension {name!r}; keep one of them"
        )


class Grid:
    """A validated grid. ``kind`` is ``"cartesian"`` or ``"points"``."""

    def __init__(self, grid):
        if isinstance(grid, Grid):
            self.__dict__.update(grid.__dict__)
            return
        if isinstance(grid, Mapping):
            self._init_cartesian(grid)
        elif isinstance(grid, Sequence) and not isinstance(grid, (str, bytes)):
            self._init_points(grid)
        else:
            raise TypeError(
                "grid must be a dict of name -> list of values (Cartesian) or a list of point dicts, "
                f"got {type(grid).__name__}"
            )

    # -- construction -------------------------------------------------------------
    def _init_cartesian(self, grid: Mapping):
        if len(grid) == 0:
            raise ValueError("grid must name at least one parameter, got an empty dict")
        dims, values = [], {}
        for name, vals in grid.items():
            _check_name("grid", name)
            where = f"grid[{name!r}]"
            if isinstance(vals, (str, bytes, Mapping)) or not isinstance(vals, Iterable):
                raise TypeError(
                    f"{where} must be a list of values, got {type(vals).__name__} {vals!r}; "
                    "wrap a single value in a list"
                )
            if isinstance(vals, np.ndarray) and vals.ndim != 1:
                raise ValueError(f"{where} must be 1-D, got an array of shape {vals.shape}")
            vs = [_scalar(f"{where}[{k}]", v) for k, v in enumerate(vals)]
            if len(vs) == 0:
                raise ValueError(f"{where} is empty: every grid dimension needs at least one value")
            _check_distinct_labels(name, vs)
            dims.append(name)
            values[name] = vs
        self.kind = "cartesian"
        self.dims = tuple(dims)
        self.values = values
        self.shape = tuple(len(values[d]) for d in dims)
        self.n_points = int(np.prod(self.shape))
        self._points = None

    def _init_points(self, grid: Sequence):
        if len(grid) == 0:
            raise ValueError("grid must contain at least one point, got an empty list")
        names = None
        points = []
        for i, p in enumerate(grid):
            where = f"grid[{i}]"
            if not isinstance(p, Mapping):
                raise TypeError(f"{where} must be a dict of parameter name -> value, got {type(p).__name__}")
            if len(p) == 0:
                raise ValueError(f"{where} is an empty dict: a point must name at least one parameter")
            q = {_check_name(where, k): _scalar(f"{where}[{k!r}]", v) for k, v in p.items()}
            if names is None:
                names = tuple(q)
            elif set(q) != set(names):
                raise ValueError(
                    f"{where} has parameters {sorted(q)} but grid[0] has {sorted(names)}: "
                    "every point of an explicit list must name the same parameters"
                )
            points.append({k: q[k] for k in names})
        self.kind = "points"
        self.dims = ("point",)
        self.names = names
        self.values = None
        self.shape = (len(points),)
        self.n_points = len(points)
        self._points = points

    # -- enumeration --------------------------------------------------------------
    def point(self, i: int) -> dict:
        """The parameters of point ``i`` (a fresh dict)."""
        if self.kind == "points":
            return dict(self._points[i])
        idx = np.unravel_index(i, self.shape)
        return {d: self.values[d][k] for d, k in zip(self.dims, idx)}

    def __iter__(self):
        if self.kind == "points":
            for p in self._points:
                yield dict(p)
        else:
            for combo in itertools.product(*(self.values[d] for d in self.dims)):
                yield dict(zip(self.dims, combo))

    def __len__(self):
        return self.n_points

    # -- serialisation ------------------------------------------------------------
    def to_json(self) -> dict:
        if self.kind == "points":
            return {"kind": "points", "names": list(self.names), "points": self._points}
        return {"kind": "cartesian", "dims": list(self.dims), "values": {d: self.values[d] for d in self.dims}}

    @classmethod
    def from_json(cls, spec: dict) -> Grid:
        if spec.get("kind") == "points":
            return cls(spec["points"])
        if spec.get("kind") == "cartesian":
            return cls({d: spec["values"][d] for d in spec["dims"]})
        raise ValueError(f"unknown grid kind {spec.get('kind')!r}")

    def canonical(self) -> str:
        """A string equal for two grids iff they enumerate the same points in the same order."""
        return json.dumps(self.to_json(), sort_keys=False, separators=(",", ":"))

    def describe_difference(self, other: Grid) -> str:
        """A one-line human description of how ``other`` differs from ``self``."""
        if self.kind != other.kind:
            return f"the store holds a {self.kind} grid, the request is a {other.kind} grid"
        if self.kind == "cartesian":
            if self.dims != other.dims:
                return f"dimensions differ: store {list(self.dims)}, request {list(other.dims)}"
            for d in self.dims:
                if json.dumps(self.values[d]) != json.dumps(other.values[d]):
                    return f"values of {d!r} differ: store {self.values[d]!r}, request {other.values[d]!r}"
            return "grids differ"
        if self.n_points != other.n_points:
            return f"the store has {self.n_points} points, the request {other.n_points}"
        for i, (a, b) in enumerate(zip(self._points, other._points)):
            if json.dumps(a) != json.dumps(b):
                return f"point {i} differs: store {a!r}, request {b!r}"
        return "grids differ"

    # -- coordinates --------------------------------------------------------------
    def coords(self) -> dict:
        """xarray coordinates of the result dataset."""
        if self.kind == "cartesian":
            return {d: (d, np.asarray(self.values[d])) for d in self.dims}
        out = {"point": ("point", np.arange(self.n_points))}
        for k in self.names:
            out[k] = ("point", np.asarray([p[k] for p in self._points]))
        return out

    @property
    def param_names(self) -> tuple:
        return self.dims if self.kind == "cartesian" else self.names
