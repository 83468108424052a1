"""Minibatch SGD, with optional heavy-ball momentum, on a finite-sum loss — SGD as a map.

The update (Robbins & Monro 1951 for the stochastic gradient; momentum in PyTorch's
``torch.optim.SGD`` convention with dampening 0, i.e. Polyak's heavy ball, 1964). At step t a
batch B_t of B example indices is drawn and

    g_B = (1/B) Σ_{i∈B_t} ∇ℓᵢ(θ_t),      L = (1/n) Σᵢ ℓᵢ,
    v ← β v + g_B,   θ ← θ − η v          (β = 0: θ ← θ − η g_B; state: none)

— equivalently θ_{t+1} = θ_t − η g_B + β(θ_t − θ_{t−1}), the form of :mod:`eosdyn.analysis.sgd`.
B_t is B distinct examples drawn uniformly (without replacement, the default), or B
independent uniform draws (``replacement=True``).

**How it runs.** The rule's step is the GD step (β = 0) or the heavy-ball step (β > 0) of
:mod:`eosdyn.rules.classic`, the very same numba functions; the stepping core draws B_t from
the trajectory's keyed stream (:mod:`eosdyn.engine.minibatch`: partial Fisher–Yates, or
independent draws), asks the loss's minibatch kernel (``FiniteSumLoss.batch_fn``) for g_B
and the batch loss L_B(θ_t), and hands the step g_B in place of ∇L. So SGD ensembles are
bit-identical for any thread count, and

- with B = n without replacement the batch is the whole data set: the core draws nothing
  and steps on ∇L itself — SGD *is* GD (β = 0) or heavy-ball (β > 0), bit for bit;
- ``batch_size=None`` (the default) means that full batch, on any loss: the only way SGD runs
  on a loss that is not a finite sum, so spec strings such as ``"sgd:lr=0.1"`` work everywhere.

Supported losses for B < n (or with replacement): finite sums with a minibatch kernel — today
:class:`eosdyn.losses.LeastSquares` and :class:`eosdyn.losses.DeepLinear` (per-example squared
errors of a deep linear net). A sympy loss is not yet a finite sum. The per-step records of :func:`eosdyn.simulate` /
:func:`eosdyn.ensemble` are the full loss L(θ_t) (``loss``), the batch loss L_{B_t}(θ_t) of the
batch that steps θ_t (``batch_loss``), ‖∇L‖, the full-batch sharpness where tracked, and η.

**Analysis.** :meth:`map`, :meth:`jacobian` and the edge are those of the *mean* iterate
E[θ_t], which follows full-batch GD / heavy-ball (E[g_B] = ∇L on a quadratic): edge
2(1 + β)/λ_max. SGD's *mean-square* edge is lower and depends on the per-example Hessians:
:func:`eosdyn.analysis.sgd_threshold` (Mulayoff & Michaeli 2024).
"""
from __future__ import annotations

import numpy as np

from .._validate import in_range, nonneg_int, positive
from .base import Rule
from .classic import _gd_jacobian, _gd_step, _gd_step_block, _heavyball_jacobian, _heavyball_step, _heavyball_step_block


class SGD(Rule):
    """Minibatch SGD with heavy-ball momentum (PyTorch's ``SGD(momentum=β)``, dampening 0):

        g_B = (1/B) Σ_{i∈B_t} ∇ℓᵢ(θ),   v ← β v + g_B,   θ ← θ − η v

    (Robbins & Monro 1951; Polyak 1964). β = ``momentum`` in [0, 1); β = 0 is plain SGD
    θ ← θ − η g_B with no state. B = ``batch_size`` distinct examples drawn uniformly at each
    step (``replacement=False``: partial Fisher–Yates) or B independent uniform draws
    (``replacement=True``), from the trajectory's keyed random stream. ``batch_size=None`` is
    the full batch (B = n): GD / heavy-ball exactly, on any loss. See the module docstring for
    the supported losses, the records and the analysis conventions.
    """

    name = "sgd"
    aliases = ("minibatchsgd",)
    summary = ("minibatch SGD with heavy-ball momentum on a finite sum (LeastSquares, DeepLinear); "
               "mean edge 2(1+β)/λ")
    color = "#0072B2"  # GD's: eosdyn.plot already draws "sgd" in it
    torch_twin = "torch.optim.SGD"
    spec_kinds = {"batch_size": "int"}
    jacobian_is_exact = True

    def __init__(self, lr, batch_size=None, momentum=0.0, replacement=False):
        self.lr = positive("lr", lr)
        self.batch_size = None if batch_size is None else nonneg_int("batch_size", batch_size, minimum=1)
        self.momentum = in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
        if not isinstance(replacement, (bool, np.bool_)):
            raise TypeError(f"replacement must be True or False, got {type(replacement).__name__}")
        self.replacement = bool(replacement)
        # the step on the gradient it is handed (g_B, from the core): GD's or heavy-ball's own
        if self.momentum == 0.0:
            self.step_fn, self.step_block_fn, self.jacobian_fn = _gd_step, _gd_step_block, _gd_jacobian
            self.hyper = np.array([self.lr])
        else:
            self.step_fn, self.step_block_fn = _heavyball_step, _heavyball_step_block
            self.jacobian_fn = _heavyball_jacobian
            self.hyper = np.array([self.lr, self.momentum])

    def hyperparameters(self):
        return {"lr": self.lr, "batch_size": self.batch_size, "momentum": self.momentum,
                "replacement": self.replacement}

    def state_size(self, dim):
        return dim if self.momentum > 0.0 else 0

    def minibatch(self, loss):
        """(B, replacement) on ``loss``, checked: B ≤ n without replacement, and a finite-sum loss
        with a minibatch kernel whenever a batch size is given. ``batch_size=None`` gives (n, False)
        on a finite sum and None (the full gradient) on any other loss."""
        from ..engine.minibatch import check_batch
        from ..losses.finite_sum import FiniteSumLoss

        finite_sum = isinstance(loss, FiniteSumLoss) and getattr(loss, "batch_fn", None) is not None
        if self.batch_size is None:
            return (loss.n_examples, False) if finite_sum else None
        if not finite_sum:
            raise TypeError(f"SGD(batch_size={self.batch_size}) needs a finite-sum loss with a minibatch kernel, "
                            f"i.e. eosdyn.losses.LeastSquares or DeepLinear (a FiniteSumLoss with batch_fn); got "
                            f"{type(loss).__name__}. (batch_size=None runs full-batch SGD, which is GD or "
                            f"heavy-ball, on any loss.)")
        check_batch(loss.n_examples, self.batch_size, self.replacement)
        return self.batch_size, self.replacement

    def edge_constant(self):
        """2 + 2β: the edge of the mean iterate E[θ], which follows full-batch heavy-ball (GD at β = 0).
        The mean-square edge of SGD is lower: :func:`eosdyn.analysis.sgd_threshold`."""
        return 2.0 + 2.0 * self.momentum

    def torch_kwargs(self):
        return {"lr": self.lr, "momentum": self.momentum}

    def jacobian(self, loss, z, t=10**9, h=None):
        """The mean map's Jacobian: I − ηH (β = 0), or [[I − ηH, −ηβI], [H, βI]] on z = (θ, v)."""
        return self.jacobian_fn(loss.hess(z[: loss.dim]), self.hyper, loss.dim)
