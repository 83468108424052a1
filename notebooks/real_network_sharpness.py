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
# # The sharpness of a real network at the edge of stability
#
# Full-batch GD on a small tanh MLP (squared loss, sklearn's digits): the top Hessian
# eigenvalue λ₁ rises until it reaches 2/η, then hovers there while the loss keeps falling,
# non-monotonically (Cohen et al., ICLR 2021). `eosdyn.bridge.train` tracks λ₁ with
# warm-started Lanczos on exact Hessian-vector products. Change `LR` and watch the plateau
# move to 2/η. `EOSDYN_NOTEBOOK_QUICK=1` runs a short, small configuration.

# %%
import os

import matplotlib

if os.environ.get("EOSDYN_NOTEBOOK_QUICK"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from eosdyn import plot
from eosdyn.bridge import MLP, digits, mse_loss, sharpness, train

QUICK = bool(os.environ.get("EOSDYN_NOTEBOOK_QUICK"))
torch.set_num_threads(1)
LR = 0.5
STEPS = 300 if QUICK else 1500
X, Y = digits(n=256 if QUICK else 1000, targets="onehot")

# %%
torch.manual_seed(0)
model = MLP(64, (32, 32) if QUICK else (64, 64), 10, activation="tanh")
print("initial sharpness", sharpness(model, mse_loss, (X, Y)).eigenvalues[0], " 2/η =", 2 / LR)
opt = torch.optim.SGD(model.parameters(), lr=LR)
tr = train(model, mse_loss, (X, Y), opt, STEPS, track_every=5, track_k=2, track_tol=1e-3, progress=False)

# %%
ok = np.isfinite(tr.sharpness)
fig, ax = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
ax[0].plot(tr.step[ok], tr.sharpness[ok], label="λ₁")
ax[0].plot(tr.step[ok], tr.lambda2[ok], label="λ₂", lw=0.8)
plot.edge_line(ax[0], LR)
ax[0].legend()
ax[1].semilogy(tr.step, tr.loss)
ax[1].set_xlabel("step")
ax[1].set_ylabel("training loss")
plt.tight_layout()

late = tr.sharpness[ok][len(tr.sharpness[ok]) // 2:]
print(f"median λ₁ over the second half: {np.median(late):.3f}  vs 2/η = {2 / LR:.3f}")
assert abs(np.median(late) * LR / 2 - 1) < 0.15
tr.to_xarray()
