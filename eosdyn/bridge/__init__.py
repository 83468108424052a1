"""The torch bridge: the toy world's rules and curvature probes, run on real PyTorch models.

- Curvature: :func:`hvp` (exact full-data-set Hessian-vector products, torch.func
  forward-over-reverse with a double-backward fallback), :func:`sharpness` (top-k Hessian
  eigenpairs by the curvature module's Lanczos on the device, warm-started) and
  :func:`preconditioned_sharpness` (λ_max(P⁻¹H), e.g. for Adam).
- Beyond the Hessian (:mod:`eosdyn.bridge.operators`): :func:`curvature_operator` (Hessian,
  Gauss–Newton, empirical and true Fisher products, as a matvec or a scipy LinearOperator),
  :func:`layer_sharpness` (λ_max per parameter block), :func:`trace` (Hutch++ / Hutchinson)
  and :func:`spectral_density` (SLQ), each one call.
- Optimizers: :class:`EoSAda`, :class:`DCAO` (``torch.optim.Optimizer`` subclasses calling
  the same :mod:`eosdyn.rules.schedules` as the toy rules), drop-in like torch's own: the
  update uses ``p.grad`` (so clipping works), every group has an ``lr`` for torch's LR
  schedulers, and a :class:`Probe` (model, loss function, probe data) gives the curvature
  probe its Hessian so the plain ``backward(); step()`` loop works. Baselines are torch's own
  (SGD with/without momentum, Adam, AdamW; full-batch GD = SGD on one batch).
- Trainer: :func:`train`, which tracks λ₁, λ₂, the gap, the preconditioned sharpness,
  the step size in force, HVP counts and wall time, checkpoints and resumes, and returns
  the same :class:`~eosdyn.sim.results.Trajectory` as the toy simulator. Its parts serve a
  hand-written loop too: :class:`CurvatureTracker` (the measurements) and
  :class:`Checkpointer` (checkpoints written only for a state whose loss was finite).
- Models, losses and offline data: :class:`MLP`, :class:`SmallCNN`, :class:`ResNet18` (the
  CIFAR variant), :func:`mse_loss` (½·sum over outputs·mean over examples),
  :func:`cross_entropy_loss`, :func:`digits`, :func:`teacher_student`,
  :func:`gaussian_mixture`, :func:`function_fitting`, :func:`cifar10`, :func:`batches`.

Everything runs on the model's own device and dtype; nothing is hard-wired to CUDA.
"""
from .checkpoint import Checkpointer
from .curvature import SharpnessResult, batch_sharpness, preconditioned_sharpness, sharpness
from .data import batches, cifar10, digits, function_fitting, gaussian_mixture, teacher_student
from .flows import central_flow, discrete_trajectory, gd_trajectory, gradient_flow, self_stabilization, stable_flow
from .hvp import HessianOperator, HVPInfo, hvp
from .models import MLP, ResNet18, SmallCNN, accuracy, cross_entropy_loss, mse_loss
from .operators import (
                    BlockSharpness,
                    CurvatureOperator,
                    ModelSpectralDensity,
                    ModelTrace,
                    curvature_operator,
                    layer_sharpness,
                    spectral_density,
                    trace,
)
from .optim import DCAO, EoSAda, NonFiniteLossError
from .probe import Probe, probe_costs
from .tracker import CurvatureTracker
from .train import train

__all__ = [
    "central_flow", "stable_flow", "gradient_flow", "gd_trajectory", "discrete_trajectory", "self_stabilization",
    "hvp", "HessianOperator", "HVPInfo", "sharpness", "preconditioned_sharpness", "SharpnessResult",
    "batch_sharpness",
    "EoSAda", "DCAO", "Probe", "probe_costs", "NonFiniteLossError", "train", "CurvatureTracker", "Checkpointer",
    "MLP", "SmallCNN", "ResNet18", "mse_loss", "cross_entropy_loss", "accuracy",
    "digits", "teacher_student", "gaussian_mixture", "function_fitting", "cifar10", "batches",
    "curvature_operator", "CurvatureOperator", "layer_sharpness", "BlockSharpness", "spectral_density",
    "ModelSpectralDensity", "trace", "ModelTrace",
]
