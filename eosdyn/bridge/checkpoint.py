"""Checkpoints of a training run that only ever keep a good state: :class:`Checkpointer`.

A checkpoint is one ``torch.save`` file holding a dict: ``format`` (:data:`CHECKPOINT_FORMAT`),
``step`` t, ``model`` and ``optimizer`` (their ``state_dict()``), ``torch_rng`` and ``cuda_rng``
(the generators' states), and whatever else the caller adds (the trainer: its records,
the tracker's warm starts, counters and times). Restored, it continues a run bit-identically.

Writing is two-phase, so that the file on disk is always the last *known good* state:

1. :meth:`Checkpointer.stage` serialises the state θ_t in memory, at the top of step t
   (before anything at θ_t draws random numbers or changes a parameter);
2. :meth:`Checkpointer.commit` writes it once the caller has found the loss at θ_t finite:
   to ``<path>.tmp``, then ``os.replace`` onto ``path`` (atomic on POSIX and Windows), so a
   crash leaves the old file or the new one, never a torn one. A step whose loss is not
   finite calls :meth:`~Checkpointer.discard` instead: the previous checkpoint stays.

The staged copy costs one serialised model + optimizer state in memory for one step.
:func:`read_checkpoint` reads a file back (refusing, with a clear error, any file that is not
an eosdyn checkpoint) and :func:`restore_checkpoint` loads it into a model and an optimizer.
"""
from __future__ import annotations

import io
import os

import torch

from .._validate import nonneg_int
from ._common import model_device_dtype

CHECKPOINT_FORMAT = "eosdyn.bridge.train/1"
_REQUIRED = ("step", "model", "optimizer", "torch_rng")


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Checkpointer:
    """Writes ``path`` every ``every`` steps, only with states whose loss was finite.

    Parameters
    ----------
    path : str or path-like
    every : int >= 1
        :meth:`due` at steps t that are multiples of ``every``, and at the last step.

    Attributes
    ----------
    last_good : int or None
        Step of the checkpoint on disk written by this object (None before the first commit).
    """

    def __init__(self, path, every: int):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
        self.path = os.fspath(path)
        self.every = nonneg_int("every", every, minimum=1)
        self.last_good = None
        self._staged = None

    def due(self, step: int, first: int, last: int) -> bool:
        """Whether step ``step`` of a run over ``first`` < t <= ``last`` is a checkpoint step.

        Never at ``first``: that state is where the run started (or resumed from).
        """
        return step > first and (step % self.every == 0 or step == last)

    def stage(self, step: int, model, optimizer, **state) -> None:
        """Serialise θ_step (model, optimizer, RNG states and ``state``) in memory."""
        device, _ = model_device_dtype(model)
        payload = {
            "format": CHECKPOINT_FORMAT, "step": step, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), **state, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        self._staged = (step, buf.getvalue())

    def commit(self) -> int | None:
        """Write the staged state to ``path`` (atomically); its step, or None if none was staged."""
        if self._staged is None:
            return None
        step, data = self._staged
        _atomic_write(self.path, data)
        self._staged = None
        self.last_good = step
        return step

    def discard(self) -> None:
        """Drop the staged state (its loss was not finite): the file keeps the previous one."""
        self._staged = None


def read_checkpoint(path, map_location=None, name: str = "resume", required=()) -> dict:
    """The payload of the checkpoint file ``path``, checked to be one written by eosdyn.

    Raises FileNotFoundError if there is no such file, and ValueError naming ``name``
    and the file if it is not an eosdyn checkpoint (any other file, a truncated or
    corrupted one, another format) or lacks one of the entries ``required`` (besides
    step, model, optimizer and the RNG state).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: there is no checkpoint file {path!r}")
    not_ours = (f"{name}: {path!r} is not an eosdyn checkpoint (a file written by "
                f"eosdyn.bridge.train with checkpoint_every, format {CHECKPOINT_FORMAT!r})")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except IsADirectoryError:
        raise ValueError(f"{not_ours}: it is a directory") from None
    except Exception as exc:  # torch.load raises many kinds (UnpicklingError, EOFError, KeyError, ...)
        raise ValueError(f"{not_ours}: torch.load failed with {type(exc).__name__}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        found = f"format {ck.get('format')!r}" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise ValueError(f"{not_ours}: found {found}")
    missing = [k for k in (*_REQUIRED, *required) if k not in ck]
    if missing:
        raise ValueError(f"{not_ours}: it lacks {missing}")
    return ck


def restore_checkpoint(ck: dict, model, optimizer) -> int:
    """Load a :func:`read_checkpoint` payload into ``model``, ``optimizer`` and the RNGs; its step."""
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    torch.set_rng_state(ck["torch_rng"].cpu())
    if ck.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["cuda_rng"]])
    return int(ck["step"])
