"""Result containers of every simulator: small dataclasses that become labelled arrays.

`Trajectory` is the full record of one run (toy map, SDE path or a trained torch
model); `EnsembleResult` holds decimated statistics of n runs. Both turn into an
``xarray.Dataset`` (``.to_xarray()``) that carries the run's parameters and the
eosdyn version as attributes, and can be written with ``.save(path)`` (NetCDF).

Divergence convention (the stepping core's one rule, :mod:`eosdyn.engine.core`): a
trajectory whose state fails — it overflows, produces NaN, or computing it raises — is
flagged (``diverged``; ``diverged_at`` = the step of the first state that failed;
``status`` = the reason) and stopped; its records from that step on are NaN and its
``final_theta`` is the last state that passed. Statistics over an ensemble
(:meth:`EnsembleResult.mean`) use only the records that are finite, so a NaN never
spreads into them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("eosdyn")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _attrs(params: dict) -> dict:
    """NetCDF-safe attributes: scalars kept, everything else JSON-encoded."""
    out = {"eosdyn_version": _version()}
    for k, v in params.items():
        if isinstance(v, (bool, np.bool_)):
            out[k] = int(v)
        elif isinstance(v, (int, float, str, np.integer, np.floating)):
            out[k] = v
        else:
            try:
                out[k] = json.dumps(v, default=lambda o: np.asarray(o).tolist())
            except TypeError:
                out[k] = repr(v)
    return out


@dataclass
class Trajectory:
    """The record of one run, every ``record_every`` steps.

    Fields (R records, d parameters): ``step`` (R,), ``theta`` (R, d) (may be
    ``None`` when not recorded), ``loss``, ``grad_norm``, ``sharpness`` (λ₁ of the
    Hessian, largest algebraic), ``lambda2`` (λ₂), ``lr`` (the step size in force),
    ``preconditioned_sharpness`` (λ_max(P⁻¹H) for preconditioned rules, else None),
    ``batch_loss`` (minibatch rules, :class:`eosdyn.rules.SGD`: the loss of the batch that steps
    the recorded state; else None),
    ``diverged`` / ``diverged_at`` (step index or -1), ``status`` ("ok", or why the run
    stopped: "diverged", "exception", …), ``final_theta`` (θ after the last step, or the
    last state that passed the divergence check, whether or not that step was recorded),
    ``extra`` (name -> (R,) or (R, ...) arrays, e.g. a trainer's accuracy or wall time),
    ``params`` (the run's settings, stored as attributes).
    """

    step: np.ndarray
    loss: np.ndarray
    theta: np.ndarray | None = None
    grad_norm: np.ndarray | None = None
    sharpness: np.ndarray | None = None
    lambda2: np.ndarray | None = None
    lr: np.ndarray | None = None
    preconditioned_sharpness: np.ndarray | None = None
    diverged: bool = False
    diverged_at: int = -1
    extra: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    final_theta: np.ndarray | None = None
    status: str = "ok"
    batch_loss: np.ndarray | None = None

    _SERIES = ("loss", "grad_norm", "sharpness", "lambda2", "lr", "preconditioned_sharpness", "batch_loss")

    def __len__(self):
        return len(self.step)

    def to_xarray(self):
        """An ``xarray.Dataset`` with dimension ``step`` (and ``dim`` for θ)."""
        import xarray as xr

        data = {}
        for name in self._SERIES:
            arr = getattr(self, name)
            if arr is not None:
                data[name] = ("step", np.asarray(arr))
        if self.theta is not None:
            data["theta"] = (("step", "dim"), np.asarray(self.theta))
        if self.final_theta is not None:
            data["final_theta"] = ("dim", np.asarray(self.final_theta))
        for name, arr in self.extra.items():
            arr = np.asarray(arr)
            dims = ("step",) + tuple(f"{name}_dim{i}" for i in range(1, arr.ndim))
            data[name] = (dims, arr)
        attrs = _attrs(self.params)
        attrs.update(diverged=int(self.diverged), diverged_at=int(self.diverged_at), status=self.status)
        return xr.Dataset(data, coords={"step": np.asarray(self.step)}, attrs=attrs)

    def save(self, path):
        """Write NetCDF (``.nc``) or Zarr (``.zarr``) with parameters and version."""
        _save(self.to_xarray(), path)


@dataclass
class EnsembleResult:
    """Decimated statistics of n trajectories recorded every ``record_every`` steps.

    ``final_theta`` (n, d) is θ at the end (or the last state that passed, for a
    trajectory that failed); ``loss``, ``sharpness`` and ``lr`` are (n, R) arrays (NaN from
    a trajectory's failure on); ``diverged`` (n,) bool, ``diverged_at`` (n,) int (-1 if
    not); ``status`` (n,) int, the reason code of each (0 = ok; :attr:`reasons` names them);
    ``theta`` (n, R, d) only when full paths were asked for; ``batch_loss`` (n, R) for
    minibatch rules (:class:`eosdyn.rules.SGD`), else None. :meth:`trajectory` gives one
    member as a :class:`Trajectory`.
    """

    step: np.ndarray
    final_theta: np.ndarray
    loss: np.ndarray
    sharpness: np.ndarray | None
    diverged: np.ndarray
    diverged_at: np.ndarray
    lr: np.ndarray | None = None
    theta: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    status: np.ndarray | None = None
    batch_loss: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.final_theta.shape[0]

    @property
    def reasons(self) -> list:
        """Why each trajectory stopped: "ok", "diverged", "exception", … (one string each)."""
        from ..engine.core import STATUS_NAMES

        codes = self.status if self.status is not None else np.where(self.diverged, 1, 0)
        return [STATUS_NAMES.get(int(c), f"status {int(c)}") for c in codes]

    def trajectory(self, i: int) -> Trajectory:
        """Trajectory ``i`` of the ensemble as a :class:`Trajectory` (copies of its records)."""
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"trajectory index {i} out of range for an ensemble of {self.n}")
        i %= self.n

        def row(a):
            return None if a is None else np.array(a[i])

        gn = self.extra.get("grad_norm")
        return Trajectory(step=self.step.copy(), loss=row(self.loss), theta=row(self.theta),
                          grad_norm=row(gn), sharpness=row(self.sharpness), lr=row(self.lr),
                          batch_loss=row(self.batch_loss),
                          diverged=bool(self.diverged[i]), diverged_at=int(self.diverged_at[i]),
                          final_theta=np.array(self.final_theta[i]), status=self.reasons[i],
                          extra={k: np.array(v[i]) for k, v in self.extra.items()
                                 if k != "grad_norm" and np.ndim(v) >= 2},
                          params=dict(self.params, trajectory=i))

    @property
    def converged_fraction(self) -> float:
        return float(np.mean(~self.diverged))

    def mean(self, name: str = "loss") -> np.ndarray:
        """Mean over the trajectories of a recorded (n, R) series, ignoring non-finite records."""
        arr = getattr(self, name) if hasattr(self, name) else self.extra[name]
        arr = np.asarray(arr, dtype=float)
        ok = np.isfinite(arr)
        cnt = ok.sum(axis=0)
        tot = np.where(ok, arr, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)

    def to_xarray(self):
        import xarray as xr

        data = {
            "final_theta": (("trajectory", "dim"), self.final_theta),
            "loss": (("trajectory", "step"), self.loss),
            "diverged": ("trajectory", self.diverged.astype(np.int8)),
            "diverged_at": ("trajectory", self.diverged_at),
        }
        if self.status is not None:
            data["status"] = ("trajectory", np.asarray(self.status, dtype=np.int8))
        if self.sharpness is not None:
            data["sharpness"] = (("trajectory", "step"), self.sharpness)
        if self.lr is not None:
            data["lr"] = (("trajectory", "step"), self.lr)
        if self.batch_loss is not None:
            data["batch_loss"] = (("trajectory", "step"), self.batch_loss)
        if self.theta is not None:
            data["theta"] = (("trajectory", "step", "dim"), self.theta)
        for name, arr in self.extra.items():
            arr = np.asarray(arr)
            dims = ("trajectory",) + (("step",) if arr.ndim > 1 else ()) + tuple(
                f"{name}_dim{i}" for i in range(2, arr.ndim))
            data[name] = (dims, arr)
        coords = {"step": self.step, "trajectory": np.arange(self.n)}
        return xr.Dataset(data, coords=coords, attrs=_attrs(self.params))

    def save(self, path):
        _save(self.to_xarray(), path)


def _save(ds, path):
    path = str(path)
    if path.endswith(".zarr"):
        ds.to_zarr(path, mode="w")
    else:
        try:
            ds.to_netcdf(path, engine="netcdf4")
        except (ImportError, ValueError):  # NetCDF-3 through scipy needs no extra package
            ds.to_netcdf(path, engine="scipy")

