"""The optimizers of the claims study and their search spaces: one registry, one grid protocol.

Every optimizer is tuned with the same number of trials in each of two modes:

* ``"step"``: the step size only, ``n_trials`` values log-spaced over a range of a factor
  100 around a conventional default (the same width for every optimizer);
* ``"joint"``: the step size *and* the method's own hyperparameters, ``n_trials`` points of
  a scrambled Halton sequence over the box (log scale where marked), seeded by the
  optimizer's name so that a study is reproducible.

What "step size" means per optimizer: ``lr`` for the torch baselines and DCAO (η₀, the base
step); for EoS-Ada the step in force is η_t = α/(|λ_max| + ε), so its step-size knob *is* α
(the torch class's ``lr`` multiplier only rescales α and is kept at 1).

Own hyperparameters tuned in the joint mode: heavy-ball momentum (SGD+momentum, with and
without cosine decay), 1 − β₂ (Adam), the decoupled weight decay (AdamW), EoS-Ada's noise
scale β (σ_t = β e^(−γλ) with γ = 0), and DCAO's α (the exponent of f), ρ_ref (as a factor on
its default 2/η₀; the refined form only: v1's η = η₀e^(−αρ) has no ρ_ref)
and T_c. Full-batch GD has none: its joint trials are a second, shifted
step-size search of the same size.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: its range and scale (``integer`` rounds a log-scale value)."""

    name: str
    lo: float
    hi: float
    log: bool = True
    integer: bool = False

    def value(self, u: float):
        if self.log:
            v = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            v = self.lo + u * (self.hi - self.lo)
        return int(round(v)) if self.integer else float(f"{v:.4g}")


@dataclass(frozen=True)
class OptimizerSpec:
    """A study optimizer: how to build it and what to search."""

    name: str
    label: str
    step: Dim
    own: tuple = ()
    full_batch: bool = False
    curvature: bool = False
    fixed: tuple = ()  # (name, value) pairs passed to the constructor unless overridden

    def build(self, params, hp: dict, total_steps: int, config):
        """The torch optimizer (and a scheduler or None) for hyperparameters ``hp``."""
        import torch

        from ..bridge import DCAO, EoSAda

        kw = dict(self.fixed)
        kw.update(hp)
        sched = None
        if self.name in ("gd", "sgdm", "sgdm_cosine"):
            opt = torch.optim.SGD(params, lr=kw["lr"], momentum=kw.get("momentum", 0.0))
            if self.name == "sgdm_cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
        elif self.name == "adam":
            opt = torch.optim.Adam(params, lr=kw["lr"], betas=(0.9, 1.0 - kw.get("one_minus_beta2", 1e-3)))
        elif self.name == "adamw":
            opt = torch.optim.AdamW(params, lr=kw["lr"], weight_decay=kw.get("weight_decay", 1e-2))
        elif self.name == "eosada":
            opt = EoSAda(params, alpha=kw["alpha"], noise_scale=kw.get("noise_scale", 0.0),
                         curvature=kw.get("curvature", "lanczos"), curvature_every=1,
                         lanczos_steps=int(kw.get("lanczos_steps", config.lanczos_steps)), seed=int(kw["seed"]))
        elif self.name in ("dcao", "dcao_v1"):
            lr = kw["lr"]
            rho_ref = kw.get("rho_factor", 1.0) * 2.0 / lr
            opt = DCAO(params, lr=lr, momentum=0.45, weight_decay=5e-4, alpha=kw.get("alpha", 0.1),
                       rho_ref=rho_ref, variant="v1" if self.name == "dcao_v1" else "refined",
                       curvature_every=int(kw.get("curvature_every", config.curvature_every)),
                       lanczos_steps=int(kw.get("lanczos_steps", config.lanczos_steps)), seed=int(kw["seed"]))
        else:  # pragma: no cover - the registry is closed
            raise ValueError(f"unknown optimizer {self.name!r}")
        return opt, sched


_LR = Dim("lr", 0.003, 0.3)
OPTIMIZERS = {
    s.name: s for s in (
        OptimizerSpec("gd", "GD (full batch)", Dim("lr", 0.03, 3.0), full_batch=True),
        OptimizerSpec("sgdm", "SGD+momentum", _LR, (Dim("momentum", 0.5, 0.99, log=False),),
                      fixed=(("momentum", 0.9),)),
        OptimizerSpec("sgdm_cosine", "SGD+momentum, cosine decay", _LR,
                      (Dim("momentum", 0.5, 0.99, log=False),), fixed=(("momentum", 0.9),)),
        OptimizerSpec("adam", "Adam", Dim("lr", 1e-4, 1e-2), (Dim("one_minus_beta2", 1e-4, 1e-1),)),
        OptimizerSpec("adamw", "AdamW", Dim("lr", 1e-4, 1e-2), (Dim("weight_decay", 1e-4, 1e-1),)),
        OptimizerSpec("eosada", "EoS-Ada", Dim("alpha", 0.02, 2.0), (Dim("noise_scale", 1e-5, 1e-2),),
                      curvature=True),
        OptimizerSpec("dcao", "DCAO (refined)", _LR,
                      (Dim("alpha", 0.01, 1.0), Dim("rho_factor", 0.5, 2.0),
                       Dim("curvature_every", 10, 400, integer=True)), curvature=True),
        OptimizerSpec("dcao_v1", "DCAO (v1, exponential f, g, h)", _LR,
                      (Dim("alpha", 0.001, 0.1), Dim("curvature_every", 10, 400, integer=True)), curvature=True),
    )
}
MODES = ("step", "joint")


def _halton(n: int, d: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    return qmc.Halton(d=d, scramble=True, seed=seed).random(n)


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def trials(name: str, mode: str, n_trials: int) -> list[dict]:
    """The ``n_trials`` hyperparameter points of optimizer ``name`` in tuning ``mode``.

    ``"step"``: the step size at the midpoints of n equal log-spaced cells of its range
    (n = 1: the range's geometric centre). ``"joint"``: scrambled Halton points over the
    step size and the optimizer's own hyperparameters (GD: the step size alone).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    spec = OPTIMIZERS[name]
    if mode == "step":
        u = (np.arange(n_trials) + 0.5) / n_trials
        return [{spec.step.name: spec.step.value(float(x))} for x in u]
    dims = (spec.step, *spec.own)
    pts = _halton(n_trials, len(dims), _name_seed(name))
    return [{d.name: d.value(float(x)) for d, x in zip(dims, row)} for row in pts]
