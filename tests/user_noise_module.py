"""A user's noise function as users write it: a plain, module-level Python function (no njit).

tests/test_callable_noise_cache.py imports it by name; eosdyn jits it and must cache the
kernel on disk (issue 16: it used to recompile in every process).
"""
import numpy as np


def diagonal_noise(theta):
    return 0.1 + 0.05 * np.tanh(theta)
