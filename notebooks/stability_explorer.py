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
# # Stability explorer: where does heavy-ball go unstable?
#
# Pick a step size η and a momentum β; the explorer runs heavy-ball
# (b ← βb + ∇L, θ ← θ − ηb) on a 2-D loss and shows
#
# * the orbit in the plane,
# * the loss against the step,
# * the spectral radius of the map's Jacobian at the minimum, against the closed-form edge
#   η* = 2(1 + β)/λ.
#
# With `ipywidgets` installed the two sliders drive the plot; without it the notebook runs a
# few fixed (η, β) pairs, so it always executes (the test suite runs it with
# `EOSDYN_NOTEBOOK_QUICK=1`).

# %%
import os

import matplotlib

if os.environ.get("EOSDYN_NOTEBOOK_QUICK"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from eosdyn.analysis.phase import orbits
from eosdyn.analysis.stability import stability, threshold
from eosdyn.losses import from_sympy
from eosdyn.rules import HeavyBall

QUICK = bool(os.environ.get("EOSDYN_NOTEBOOK_QUICK"))
STEPS = 150 if QUICK else 600

# the tilted double well of figure 7: minima ±(1, 1), sharpness 2 + √2 there
loss = from_sympy("(x**2-1)**2/4 + (y-x)**2/2", ["x", "y"], min_value=0.0)
theta_star = np.array([1.0, 1.0])
lam = float(np.linalg.eigvalsh(loss.hess(theta_star))[-1])
start = np.array([1.3, 0.6])


def explore(lr=0.5, momentum=0.5):
    """Run heavy-ball (η = lr, β = momentum) from `start` and draw orbit, loss and stability."""
    rule = HeavyBall(lr, momentum)
    path = orbits(loss, rule, start[None, :], STEPS, blowup=1e6)[0]
    st = stability(rule, loss, theta_star)
    thr = threshold(loss, "heavyball", theta_star, momentum=momentum)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ok = np.all(np.isfinite(path), axis=1)
    ax[0].plot(path[ok, 0], path[ok, 1], "-o", ms=2, lw=0.6)
    ax[0].plot(*theta_star, "k*", ms=10)
    ax[0].set_title(f"η = {lr:.3f}, β = {momentum:.2f}: ρ(J) = {st.spectral_radius:.4f} ({st.classification})")
    vals = np.array([loss.value(p) if np.all(np.isfinite(p)) else np.nan for p in path])
    ax[1].semilogy(np.maximum(vals, 1e-300))
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("loss")
    ax[1].set_title(f"edge 2(1+β)/λ = {thr.analytic:.4f}, measured {thr.numeric:.4f}")
    plt.tight_layout()
    plt.show()
    return st, thr


# %%
try:
    import ipywidgets as widgets
except ImportError:
    widgets = None

if widgets is not None and not QUICK:
    widgets.interact(explore, lr=widgets.FloatSlider(value=0.5, min=0.05, max=2.0, step=0.01),
                     momentum=widgets.FloatSlider(value=0.5, min=0.0, max=0.95, step=0.05))
else:
    for lr, beta in [(0.5, 0.0), (0.5, 0.5), (1.2, 0.5)]:
        st, thr = explore(lr, beta)
        # stable exactly when the step is below the closed-form edge
        assert st.stable == (lr < thr.analytic), (lr, beta, st.spectral_radius, thr.analytic)

# %% [markdown]
# The closed form 2(1 + β)/λ and the bisection on the Jacobian's spectral radius agree to
# round-off for every β: the table below is what `eosdyn check threshold` prints.

# %%
for beta in np.linspace(0.0, 0.9, 4 if QUICK else 10):
    thr = threshold(loss, "heavyball", theta_star, momentum=float(beta))
    print(f"β = {beta:.2f}   2(1+β)/λ = {thr.analytic:.6f}   measured = {thr.numeric:.6f}   ratio = {thr.ratio:.9f}")
