"""Do the proposals' claims hold? A study of EoS-Ada and DCAO as a careful reviewer would run it.

``eosdyn claims [--quick] [--out DIR]`` (or :func:`run_study`) tunes every optimizer —
full-batch GD, SGD+momentum with and without cosine decay, Adam, AdamW, EoS-Ada and both
forms of DCAO — with the same number of trials on the same grid protocol, in two modes
(step size only; step size plus the method's own hyperparameters), picks each one's best
trial on validation accuracy, runs it with fresh seeds, runs the proposals' ablations, and
writes ``claims.md`` (each claim beside what was measured, with a 95 % interval and a
verdict), ``claims.json`` (every number) and ``claims.png``. The runs live in resumable
:func:`eosdyn.sweep.sweep` stores under the output directory: an interrupted study resumes
where it stopped, and one resumed with another configuration is refused, naming the fields
that changed.

* :class:`ClaimsConfig` — what decides the numbers (``ClaimsConfig.quick()`` for CI);
* :data:`OPTIMIZERS`, :func:`trials` — the optimizers and their search spaces;
* :func:`run_trial` — one training run (what the sweeps call);
* :func:`run_study`, :func:`summarize`, :func:`write_report` — the study and its report;
* :mod:`eosdyn.claims.metrics` — the proposals' metrics (time to target, ECE, the
  loss-oscillation spectrum, the spread of the loss and of λ₁) and the intervals.

>>> from eosdyn.claims import ClaimsConfig, run_study
>>> summary = run_study(ClaimsConfig.quick(), "runs/claims-quick")     # doctest: +SKIP
>>> [(c["claim"], c["verdict"]) for c in summary["claims"]]             # doctest: +SKIP
"""
from __future__ import annotations

from .config import ClaimsConfig
from .optimizers import MODES, OPTIMIZERS, trials
from .study import markdown, run_study, summarize, write_report
from .trial import run_trial

__all__ = ["ClaimsConfig", "OPTIMIZERS", "MODES", "trials", "run_trial", "run_study", "summarize",
           "write_report", "markdown"]
