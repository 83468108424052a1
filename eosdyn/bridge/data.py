"""Data sets that work offline, as ``(inputs, targets)`` tensor pairs.

Nothing here downloads anything.

- :func:`digits` — scikit-learn's 8×8 handwritten digits (1797 images, 10 classes), which ship
  inside scikit-learn.
- :func:`teacher_student` — regression on the outputs of a random "teacher" MLP.
- :func:`gaussian_mixture` — classification of points drawn around random class means.
- :func:`function_fitting` — 1-D regression y = f(x) on a grid.
- :func:`cifar10` — CIFAR-10 from the python-pickle batch files a user already has.
- :func:`batches` — split a pair into a list of minibatches.

Random data are drawn with numpy's PCG64 generator seeded with ``seed`` in float64 on the
host, then cast and moved: the same seed gives the same data on every device and dtype.
Targets: ``targets="labels"`` gives int64 class indices (for cross-entropy, and accepted by
:func:`~eosdyn.bridge.models.mse_loss`, which one-hot encodes them), ``"onehot"`` float
one-hot rows.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from .._validate import choice, nonneg_int, positive

_TARGETS = ("labels", "onehot")


def _finish(X, labels_or_y, targets, n_classes, dtype, device):
    x = torch.as_tensor(np.ascontiguousarray(X), dtype=dtype, device=device)
    if targets is None:  # regression
        y = torch.as_tensor(np.ascontiguousarray(labels_or_y), dtype=dtype, device=device)
    elif targets == "labels":
        y = torch.as_tensor(np.asarray(labels_or_y, dtype=np.int64), device=device)
    else:
        oh = np.zeros((len(labels_or_y), n_classes))
        oh[np.arange(len(labels_or_y)), np.asarray(labels_or_y, dtype=np.int64)] = 1.0
        y = torch.as_tensor(oh, dtype=dtype, device=device)
    return x, y


def _subset(n, total, seed, name="n"):
    if n is None:
        return np.arange(total)
    n = nonneg_int(name, n, minimum=1)
    if n > total:
        raise ValueError(f"{name} must be in [1, {total}] (the data set's size), got {n}")
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def digits(n=None, targets: str = "onehot", standardize: bool = True, seed: int = 0,
           dtype=torch.float32, device=None):
    """scikit-learn's digits: X (n, 64) pixel intensities in [0, 16], 10 classes.

    ``n`` picks a random subset (seeded, kept in the original order); ``standardize``
    centres each pixel and divides by the overall standard deviation of the centred
    pixels (one scalar, so constant pixels stay 0).
    """
    from sklearn.datasets import load_digits

    choice("targets", targets, _TARGETS)
    X, y = load_digits(return_X_y=True)
    idx = _subset(n, X.shape[0], nonneg_int("seed", seed))
    X, y = X[idx].astype(np.float64), y[idx]
    if standardize:
        X = X - X.mean(axis=0)
        X = X / X.std()
    return _finish(X, y, targets, 10, dtype, device)


def teacher_student(n: int = 200, in_dim: int = 10, out_dim: int = 1, hidden: int = 16,
                    activation: str = "tanh", noise: float = 0.0, seed: int = 0,
                    dtype=torch.float32, device=None):
    """Regression on a random teacher: x ~ N(0, I_d), y = W₂ φ(W₁x/√d) + noise·N(0, I).

    W₁ (hidden × in_dim) and W₂ (out_dim × hidden) have i.i.d. N(0, 1) and N(0, 1/hidden)
    entries; φ is tanh or ReLU. Returns (X (n, in_dim), Y (n, out_dim)).
    """
    n = nonneg_int("n", n, minimum=1)
    in_dim = nonneg_int("in_dim", in_dim, minimum=1)
    out_dim = nonneg_int("out_dim", out_dim, minimum=1)
    hidden = nonneg_int("hidden", hidden, minimum=1)
    choice("activation", activation, ("tanh", "relu"))
    noise = positive("noise", noise, allow_zero=True)
    rng = np.random.default_rng(nonneg_int("seed", seed))
    W1 = rng.standard_normal((hidden, in_dim))
    W2 = rng.standard_normal((out_dim, hidden)) / np.sqrt(hidden)
    X = rng.standard_normal((n, in_dim))
    pre = X @ W1.T / np.sqrt(in_dim)
    act = np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0.0)
    Y = act @ W2.T + noise * rng.standard_normal((n, out_dim))
    return _finish(X, Y, None, 0, dtype, device)


def gaussian_mixture(n: int = 300, dim: int = 2, n_classes: int = 3, separation: float = 3.0,
                     targets: str = "labels", seed: int = 0, dtype=torch.float32, device=None):
    """Points x = μ_c + N(0, I_dim) with class c uniform over ``n_classes``.

    The class means μ_c are i.i.d. uniform directions scaled to norm ``separation``.
    """
    n = nonneg_int("n", n, minimum=1)
    dim = nonneg_int("dim", dim, minimum=1)
    n_classes = nonneg_int("n_classes", n_classes, minimum=2)
    separation = positive("separation", separation, allow_zero=True)
    choice("targets", targets, _TARGETS)
    rng = np.random.default_rng(nonneg_int("seed", seed))
    mu = rng.standard_normal((n_classes, dim))
    mu *= separation / np.maximum(np.linalg.norm(mu, axis=1, keepdims=True), 1e-300)
    c = rng.integers(0, n_classes, size=n)
    X = mu[c] + rng.standard_normal((n, dim))
    return _finish(X, c, targets, n_classes, dtype, device)


_FUNCTIONS = {
    "sin": np.sin,
    "sin3": lambda x: np.sin(3.0 * x),
    "abs": np.abs,
    "cubic": lambda x: x ** 3 - x,
    "step": lambda x: np.where(x >= 0.0, 1.0, -1.0),
}


def function_fitting(n: int = 64, fn="sin", x_range=(-np.pi, np.pi), noise: float = 0.0,
                     seed: int = 0, dtype=torch.float32, device=None):
    """1-D regression on an even grid: x_i = linspace(a, b, n), y_i = f(x_i) + noise·N(0, 1).

    ``fn`` is one of "sin", "sin3" (sin 3x), "abs", "cubic" (x³ − x), "step", or a
    callable on numpy arrays. Returns X (n, 1), Y (n, 1).
    """
    n = nonneg_int("n", n, minimum=1)
    f = _FUNCTIONS[choice("fn", fn, _FUNCTIONS)] if isinstance(fn, str) else fn
    if not callable(f):
        raise TypeError(f"fn must be a name in {sorted(_FUNCTIONS)} or a callable, got {type(fn).__name__}")
    a, b = (float(v) for v in x_range)
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"x_range must be finite with low < high, got {x_range!r}")
    noise = positive("noise", noise, allow_zero=True)
    x = np.linspace(a, b, n)
    y = np.asarray(f(x), dtype=np.float64).reshape(n)
    if noise:
        y = y + noise * np.random.default_rng(nonneg_int("seed", seed)).standard_normal(n)
    return _finish(x[:, None], y[:, None], None, 0, dtype, device)


# ------------------------------------------------------------------------------ CIFAR-10
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_CIFAR_DIR = "cifar-10-batches-py"


def _cifar_dir(root) -> str:
    root = os.fspath(root)
    for cand in (os.path.join(root, _CIFAR_DIR), root):
        if os.path.isfile(os.path.join(cand, "data_batch_1")) or os.path.isfile(os.path.join(cand, "test_batch")):
            return cand
    raise FileNotFoundError(
        f"root: no CIFAR-10 batch files under {root!r} (expected {_CIFAR_DIR}/data_batch_1..5 and "
        "test_batch, the python version from https://www.cs.toronto.edu/~kriz/cifar.html); "
        "eosdyn never downloads them")


def cifar10(root, train: bool = True, n=None, targets: str = "labels", normalize: bool = True,
            seed: int = 0, dtype=torch.float32, device=None):
    """CIFAR-10 from the python-pickle batches a user already has: X (n, 3, 32, 32), labels.

    ``root`` is the folder holding ``cifar-10-batches-py/`` (torchvision's layout) or that
    folder itself. The files are read directly with ``pickle`` (the format torchvision's
    ``CIFAR10`` reads; no checksum is verified and nothing is downloaded, so torchvision is
    not needed). Training split: ``data_batch_1`` … ``data_batch_5`` (those present, in
    order); test split: ``test_batch``. Pixels are scaled to [0, 1] and, with ``normalize``,
    standardised per channel with the usual CIFAR-10 mean and std. ``n`` picks a seeded
    random subset. Only open files you trust: unpickling runs code from the file.
    """
    choice("targets", targets, _TARGETS)
    d = _cifar_dir(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="bytes")
        data = entry.get(b"data", entry.get("data"))
        labels = entry.get(b"labels", entry.get("labels", entry.get(b"fine_labels")))
        if data is None or labels is None:
            raise ValueError(f"root: {path} is not a CIFAR-10 batch (no 'data'/'labels' entries)")
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"root: {path} has data of shape {data.shape}, expected (N, 3072)")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    if not xs:
        raise FileNotFoundError(f"root: no {'training' if train else 'test'} batch files in {d!r}")
    X = np.concatenate(xs).astype(np.float64) / 255.0
    y = np.concatenate(ys)
    idx = _subset(n, X.shape[0], nonneg_int("seed", seed))
    X, y = X[idx], y[idx]
    if normalize:
        X = (X - np.asarray(CIFAR10_MEAN)[None, :, None, None]) / np.asarray(CIFAR10_STD)[None, :, None, None]
    return _finish(X, y, targets, 10, dtype, device)


def batches(data, batch_size: int, shuffle: bool = False, seed: int = 0) -> list:
    """Split an ``(inputs, targets)`` pair into a list of minibatch pairs.

    The last batch may be smaller. With ``shuffle`` the examples are permuted once
    (numpy PCG64 seeded with ``seed``) before splitting.
    """
    x, y = data
    n = x.shape[0]
    batch_size = nonneg_int("batch_size", batch_size, minimum=1)
    if n == 0:
        raise ValueError("data must contain at least one example, got an empty data set")
    order = np.random.default_rng(nonneg_int("seed", seed)).permutation(n) if shuffle else np.arange(n)
    idx = torch.as_tensor(order, device=x.device)
    return [(x[idx[i:i + batch_size]], y[idx[i:i + batch_size].to(y.device)])
            for i in range(0, n, batch_size)]
