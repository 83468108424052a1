# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # eosdyn quickstart: gradient descent at the edge of stability
#
# Gradient descent θ ← θ − η∇L(θ) on a quadratic ½θᵀHθ is stable iff ηλ_max(H) < 2.
# This notebook
#
# 1. runs GD just below and just above that edge with `eosdyn.simulate`;
# 2. builds the same loss and rules from the command line's spec strings;
# 3. compares the theoretical threshold with the measured one (`eosdyn.analysis`);
# 4. runs an ensemble of noisy starts with `eosdyn.ensemble`.
#
# Set `EOSDYN_NOTEBOOK_QUICK=1` for a small configuration (the test suite does).

# %%
import os

import matplotlib

if os.environ.get("EOSDYN_NOTEBOOK_QUICK"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import eosdyn
from eosdyn import plot
from eosdyn.losses import Quadratic
from eosdyn.rules import GD

QUICK = bool(os.environ.get("EOSDYN_NOTEBOOK_QUICK"))
STEPS = 200 if QUICK else 2000

# %% [markdown]
# ## 1. Below and above 2/λ
# The Hessian has eigenvalues 10 and 1, so the edge is η = 2/10 = 0.2.

# %%
loss = Quadratic(eigs=[10.0, 1.0])
# |θᵢ| ≥ blowup counts as divergence (the default, 1e100, takes longer to reach)
runs = {lr: eosdyn.simulate(loss, GD(lr), [1.0, 1.0], STEPS, blowup=1e6) for lr in (0.19, 0.21)}
fig, ax = plt.subplots(1, 2, figsize=(8, 3))
for lr, tr in runs.items():
    ax[0].semilogy(tr.step, tr.loss, label=f"η = {lr}: " + ("diverged" if tr.diverged else "converged"))
    ax[1].plot(tr.step, tr.sharpness * tr.lr / 2, label=f"η = {lr}")
ax[0].set_xlabel("step")
ax[0].set_ylabel("loss")
ax[0].legend()
ax[1].axhline(1, color=plot.COLORS["edge"], ls="--", label="edge ηλ/2 = 1")
ax[1].set_xlabel("step")
ax[1].set_ylabel("ηλ₁ / 2")
ax[1].legend()
plt.tight_layout()
assert not runs[0.19].diverged and runs[0.21].diverged

# %% [markdown]
# ## 2. The same from spec strings
# `eosdyn simulate --loss quadratic:eigs=10,1 --rule gd:lr=0.19 --steps 1000` parses its
# arguments with `eosdyn.specs`; the parser is available from Python too.

# %%
from eosdyn.specs import resolve_loss, rule_from_spec  # noqa: E402

spec = resolve_loss("quadratic:eigs=10,1")
rule = rule_from_spec("heavyball:lr=0.3,momentum=0.9")
tr = eosdyn.simulate(spec.loss, rule, spec.theta0, STEPS)
print(spec.loss, rule, "final loss", tr.loss[-1])

# %% [markdown]
# ## 3. Theory against numerics
# Heavy-ball with momentum β is stable iff η < 2(1 + β)/λ.

# %%
from eosdyn.analysis.stability import threshold  # noqa: E402

for beta in (0.0, 0.5, 0.9):
    res = threshold(loss, "heavyball", [0.0, 0.0], momentum=beta)
    print(f"β = {beta}: closed form {res.analytic:.6f}, measured {res.numeric:.6f}, ratio {res.ratio:.8f}")

# %% [markdown]
# ## 4. An ensemble
# 64 random starts at η = 0.19, recorded every 10 steps.

# %%
rng = np.random.default_rng(0)
ens = eosdyn.ensemble(loss, GD(0.19), rng.standard_normal((64, 2)), STEPS, record_every=10)
print("converged fraction", ens.converged_fraction, "mean final loss", ens.mean("loss")[-1])
ens.to_xarray()
