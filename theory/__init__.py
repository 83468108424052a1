"""Symbolic derivations (sympy) of eosdyn's closed forms, each checked by the tests against
eosdyn's numeric function for the same quantity and against simulation.

Modules (each runs as a script and prints its derivation: ``python -m theory.thresholds``):

- :mod:`theory.thresholds` — linear-stability thresholds of GD, heavy-ball, Nesterov, Adam;
- :mod:`theory.eosada` — EoS-Ada's effective step and its edge α = 2(1 + ε/λ);
- :mod:`theory.cubic_logistic` — GD on f = x²/2 − x³/3 is the logistic map; its 2-cycle
  and the first two period doublings;
- :mod:`theory.noisy_gd` — stationary variance of noisy GD and of its SDE;
- :mod:`theory.scalar_net` — sharpness along the minimum manifold of the scalar network.

``theory`` is a plain package at the repository root, not part of the installed
``eosdyn`` distribution; the tests put the repository root on ``sys.path`` to import it.
"""
