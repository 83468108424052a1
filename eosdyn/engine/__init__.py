"""The stepping core: one numba loop for every (loss, rule) pair, with optional noise.

- :mod:`eosdyn.engine.core` — the loop (observe, record, advance), the one divergence rule,
  the random-stream order, the per-trajectory and the blocked ensemble kernels, the
  Lyapunov recorder;
- :mod:`eosdyn.engine.noise` — the noise term and **the one noise convention**: per step
  θ ← F(θ) + √η_t·B(θ)ξ, covariance η_tΣ(θ), which is the Euler–Maruyama step (dt = 1) of
  dθ = −η∇L dt + √(ηΣ) dW with t in steps; SGD's minibatch noise is Σ = ηΣ_B;
- :mod:`eosdyn.engine.minibatch` — the minibatch draw of SGD (:class:`eosdyn.rules.SGD`): B
  example indices per step from the trajectory's keyed stream, and :func:`minibatch_indices`,
  which replays them;
- :mod:`eosdyn.engine.kernels` — each (loss family, rule) pair's kernels, specialised and
  cached on disk by :mod:`eosdyn.codegen`;
- :mod:`eosdyn.engine.run` — :func:`run_map`, the one Python driver: memory check, kernel
  choice, resumable calls with progress and Ctrl-C, replays that recover a failed
  trajectory's last good state.
"""
from .._validate import MAX_STEPS
from .minibatch import minibatch_indices
from .noise import PSD_RTOL  # noqa: F401
from .run import MapOutput, NoisePlan, RunInterrupted, run_map

__all__ = ["run_map", "MapOutput", "NoisePlan", "RunInterrupted", "MAX_STEPS", "minibatch_indices"]
