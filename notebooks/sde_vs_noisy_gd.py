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
# # The SDE against noisy gradient descent
#
# Noisy GD θ ← θ − η∇L + √η σ ξ is the Euler–Maruyama scheme, with dt = 1 step, of the SDE
# dθ = −η∇L dt + √η σ dW. On a quadratic mode of curvature λ their stationary variances are
#
# * map: σ²/(λ(2 − ηλ)),
# * SDE: σ²/(2λ),
#
# equal as ηλ → 0, apart as ηλ → 2 (the edge of stability), where only the map's diverges.
# `eosdyn.sde.compare_sde_and_map` runs both at matched times. Set
# `EOSDYN_NOTEBOOK_QUICK=1` for a small ensemble.

# %%
import os

import matplotlib

if os.environ.get("EOSDYN_NOTEBOOK_QUICK"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from eosdyn.analysis.stationary import stationary_variance_per_mode
from eosdyn.losses import Quadratic
from eosdyn.sde import Isotropic, compare_sde_and_map

QUICK = bool(os.environ.get("EOSDYN_NOTEBOOK_QUICK"))
N = 400 if QUICK else 4000
STEPS = 200 if QUICK else 1000

# %% [markdown]
# One diagonal quadratic, one mode per value of ηλ (η = 1, λᵢ = ηλᵢ).

# %%
hl = np.array([0.2, 1.0, 1.6, 1.9]) if QUICK else np.linspace(0.1, 1.9, 10)
loss = Quadratic(eigs=hl)
sigma = 1.0
cmp = compare_sde_and_map(loss, 1.0, Isotropic(sigma), np.zeros((N, hl.size)), STEPS, dt=0.1,
                          method="srk15", record_every=1)
burn = 60
v_map = cmp.map.theta_var[burn:].mean(axis=0)
v_sde = cmp.sde.theta_var[burn:].mean(axis=0)
th_map = stationary_variance_per_mode(hl, sigma ** 2, 1.0, kind="map")
th_sde = stationary_variance_per_mode(hl, sigma ** 2, 1.0, kind="sde")
for row in zip(hl, v_map, th_map, v_sde, th_sde):
    print("ηλ = {:.2f}: map {:.4f} (theory {:.4f})   SDE {:.4f} (theory {:.4f})".format(*row))

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
grid = np.linspace(0.02, 1.97, 200)
ax.plot(grid, 1 / (2 - grid), label="map: σ²/(λ(2−ηλ)), scaled by λ/σ²")
ax.plot(grid, 0.5 + 0 * grid, label="SDE: σ²/(2λ), scaled")
ax.plot(hl, v_map * hl, "o", label="noisy GD")
ax.plot(hl, v_sde * hl, "s", mfc="none", label="SDE (srk15)")
ax.set_yscale("log")
ax.set_xlabel("ηλ")
ax.set_ylabel("λ Var / σ²")
ax.legend(fontsize=7)
plt.tight_layout()
rel = max(np.max(np.abs(v_map / th_map - 1)), np.max(np.abs(v_sde / th_sde - 1)))
print("largest relative error against the closed forms:", rel)
assert rel < 0.1
