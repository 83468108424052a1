"""Shared plumbing of the torch bridge: parameter lists, devices, flat vectors, data batches.

Conventions (used by every function of :mod:`eosdyn.bridge`):

- The *parameters* of a model are ``[p for p in model.parameters() if p.requires_grad]``,
  in ``model.parameters()`` order (shared parameters once). A *flat vector* over them is
  their concatenation, each flattened in row-major order, on the model's device and dtype.
- A *data set* is either one ``(inputs, targets)`` pair (full batch) or an iterable of such
  pairs (a list of batches, a ``DataLoader``, ...). Floating-point inputs and targets are cast
  to the model's dtype and moved to its device; integer targets (class labels) keep their dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def trainable_parameters(model) -> list:
    """The parameters the bridge differentiates: those with ``requires_grad``, in order."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have at least one parameter with requires_grad=True")
    return params


def named_trainable_parameters(model) -> list:
    trainable_parameters(model)  # type / emptiness checks
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def common_device_dtype(params, name: str = "model"):
    """The single (device, dtype) shared by ``params``; ValueError if they differ."""
    devices = {p.device for p in params}
    if len(devices) != 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise ValueError(f"{name} has parameters on several devices ({names}); the bridge needs "
                         f"all of them on one device: move the model with {name}.to(device)")
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        names = ", ".join(sorted(str(d) for d in dtypes))
        raise ValueError(f"{name} has parameters of several dtypes ({names}); convert it with "
                         f"{name}.to(dtype)")
    (device,), (dtype,) = devices, dtypes
    if not dtype.is_floating_point:
        raise ValueError(f"{name} parameters must be floating point, got {dtype}")
    return device, dtype


def model_device_dtype(model):
    return common_device_dtype(trainable_parameters(model), "model")


def flatten(tensors) -> torch.Tensor:
    """Concatenate tensors into one flat vector (row-major)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like) -> list:
    """Split a flat vector into tensors shaped like ``like`` (views of ``vec``)."""
    out, i = [], 0
    for p in like:
        n = p.numel()
        out.append(vec[i:i + n].view_as(p))
        i += n
    return out


def check_flat_vector(name: str, v, n: int, device, dtype) -> torch.Tensor:
    """``v`` as a 1-D tensor of length ``n`` on (device, dtype); clear errors otherwise."""
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a 1-D tensor of length {n}: {exc}") from None
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must be a flat vector over the model's trainable parameters, "
                         f"shape ({n},), got shape {tuple(v.shape)}")
    if not (v.dtype.is_floating_point or v.dtype.is_complex):
        v = v.to(dtype)
    return v.to(device=device, dtype=dtype)


@dataclass
class Batches:
    """A data set normalised to a list of (inputs, targets) on one device, with weights."""

    batches: list
    sizes: list
    n_examples: int

    @property
    def weights(self) -> list:
        """Each batch's share of the examples, n_b / N (weights of the batch-mean losses)."""
        return [s / self.n_examples for s in self.sizes]


def _batch_size(x, where: str) -> int:
    if isinstance(x, torch.Tensor):
        if x.ndim == 0:
            raise ValueError(f"{where}: inputs must have a leading batch dimension, got a scalar")
        return int(x.shape[0])
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return _batch_size(x[0], where)
    try:
        return len(x)
    except TypeError:
        raise TypeError(f"{where}: inputs must be a tensor (batch first), got {type(x).__name__}") from None


def _move(x, device, dtype):
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point:
            return x.to(device=device, dtype=dtype)
        return x.to(device=device)
    if isinstance(x, (list, tuple)):
        return type(x)(_move(t, device, dtype) for t in x)
    return x


def _is_pair(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and isinstance(data[0], torch.Tensor) and isinstance(data[1], torch.Tensor))


def as_batches(data, device=None, dtype=None, name: str = "data") -> Batches:
    """Normalise ``data`` (a pair or an iterable of pairs) to :class:`Batches` on (device, dtype)."""
    if data is None:
        raise TypeError(f"{name} must be an (inputs, targets) pair or an iterable of such pairs, got None")
    if _is_pair(data):
        pairs = [tuple(data)]
    else:
        try:
            pairs = list(data)
        except TypeError:
            raise TypeError(f"{name} must be an (inputs, targets) pair or an iterable of such pairs, "
                            f"got {type(data).__name__}") from None
    batches, sizes = [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{name}: batch {i} must be an (inputs, targets) pair, got "
                            f"{type(pair).__name__}")
        x, y = pair
        nb = _batch_size(x, f"{name} batch {i}")
        ny = _batch_size(y, f"{name} batch {i} targets")
        if nb != ny:
            raise ValueError(f"{name}: batch {i} has {nb} inputs but {ny} targets")
        if nb == 0:
            continue
        if device is not None:
            x, y = _move(x, device, dtype), _move(y, device, dtype)
        batches.append((x, y))
        sizes.append(nb)
    n = sum(sizes)
    if n == 0:
        raise ValueError(f"{name} must contain at least one example, got an empty data set")
    return Batches(batches, sizes, n)


def has_batchnorm(model) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


_THREADS_WARNED: list = []


def free_cores() -> tuple[int, int, float]:
    """(free cores, usable cores, 1-minute load average), the load of this process excluded.

    Usable cores are this process's CPU affinity; the free ones are those not busy with other
    work: usable − max(0, load − 1), at least 1 (load average 0 where the OS has none).
    """
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        load = float(os.getloadavg()[0])
    except (AttributeError, OSError):
        load = 0.0
    return max(1, int(round(cores - max(0.0, load - 1.0)))), cores, load


def warn_if_threads_oversubscribe() -> bool:
    """Warn once per process when torch's intra-op threads exceed the free cores.

    On a busy machine torch's default (one thread per core) makes the threads wait for each
    other: issue 15 measured one HVP of a small MLP at 250–500 ms instead of 2–4 ms on a
    2-core VM with another job running. Returns whether it warned.
    """
    import warnings

    if _THREADS_WARNED:
        return False
    n = torch.get_num_threads()
    free, cores, load = free_cores()
    if n <= free:
        return False
    _THREADS_WARNED.append(True)
    warnings.warn(f"torch uses {n} intra-op threads but only about {free} of this process's {cores} cores are free "
                  f"(1-minute load average {load:.1f}); oversubscribed threads can make each product 100x slower. "
                  f"Call torch.set_num_threads({free}) (small models: 1 is often fastest).", RuntimeWarning,
                  stacklevel=3)
    return True
