"""The claims study's configuration: :class:`ClaimsConfig`, its presets and its checks.

A study directory holds ``config.json``; a study resumed with another configuration is
refused with a ValueError that names every changed field (:func:`check_resume`), so that
results of two configurations are never mixed in one report.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path

from .._validate import choice, in_range, nonneg_int
from .optimizers import OPTIMIZERS

MODELS = ("mlp", "cnn", "resnet18")
DATASETS = ("digits", "cifar10", "synthetic-cifar")
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ClaimsConfig:
    """Everything that decides the numbers of a claims study.

    Attributes
    ----------
    model : {"mlp", "cnn", "resnet18"}
        A tanh MLP (``hidden`` widths), :class:`~eosdyn.bridge.SmallCNN` (``width``
        channels) or :class:`~eosdyn.bridge.ResNet18` (``width`` base channels).
    data : {"digits", "cifar10", "synthetic-cifar"}
        scikit-learn's digits (ships with scikit-learn), CIFAR-10 from the python-pickle
        files under ``data_root`` (:func:`~eosdyn.bridge.cifar10`), or Gaussian images of
        CIFAR's shape labelled by a random linear teacher (for timing on a GPU).
    n_train, n_val, n_test : int
        Examples in each split (drawn once, with ``split_seed``, from the data set).
    epochs : int >= 1
        Budget of every run in passes over the training set at ``batch_size``; full-batch
        GD gets the same number of *steps* (so it sees one pass per step).
    batch_size : int >= 1
    evals_per_epoch : int >= 1
        Evaluations (validation, test, λ₁) per epoch: the resolution of "epochs to target".
    optimizers : tuple of names of :data:`~eosdyn.claims.optimizers.OPTIMIZERS`
    n_trials : int >= 1
        Trials of every optimizer in each tuning mode ("step" and "joint"): the same count
        for all, the tuning budget the proposals' reviewers ask for.
    seeds : int >= 1
        Seeds at each optimizer's chosen point (5: the EoS-Ada proposal's count; 3 would
        be DCAO's).
    lanczos_steps : int >= 1
        m, the HVP budget of one curvature probe of EoS-Ada and DCAO.
    curvature_every : int >= 1
        DCAO's T_c (EoS-Ada probes every step, as proposed).
    track_subset : int >= 1
        Training examples of the Hessian whose λ₁ is measured once per epoch.
    ablations : bool
    ablation_seeds : int >= 1
    target_fraction : float in (0, 1]
        "Time to target" is the first epoch whose validation accuracy reaches this fraction
        of the best validation accuracy of any run of the study (DCAO proposal, §2.6: 90 %).
    n_workers : int >= 1
        Runs in parallel (1: one at a time, the only setting whose wall-clock times are
        free of contention from the study's own runs).
    threads : int >= 1
        torch's intra-op threads per run (1 is fastest for the small CPU models; set during
        a run and restored after it).
    device : str
        torch device of the runs ("cpu", "cuda", "cuda:1", ...).
    """

    model: str = "mlp"
    data: str = "digits"
    data_root: str | None = None
    hidden: tuple = (64, 64)
    width: int = 8
    n_train: int = 1078
    n_val: int = 359
    n_test: int = 360
    split_seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    evals_per_epoch: int = 4
    optimizers: tuple = field(default_factory=lambda: tuple(OPTIMIZERS))
    n_trials: int = 6
    seeds: int = 5
    lanczos_steps: int = 20
    curvature_every: int = 100
    track_subset: int = 256
    ablations: bool = True
    ablation_seeds: int = 3
    target_fraction: float = 0.9
    n_workers: int = 1
    threads: int = 1
    device: str = "cpu"

    def __post_init__(self):
        choice("model", self.model, MODELS)
        choice("data", self.data, DATASETS)
        if self.data == "cifar10" and not self.data_root:
            raise ValueError("data='cifar10' needs data_root, the folder with CIFAR-10's python-pickle files "
                             "(cifar-10-batches-py)")
        if self.data == "digits" and self.model == "resnet18":
            raise ValueError("model='resnet18' needs 32x32 RGB images: data='cifar10' or 'synthetic-cifar'")
        if not isinstance(self.hidden, (tuple, list)) or not self.hidden:
            raise TypeError(f"hidden must be a non-empty tuple of layer widths, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(nonneg_int(f"hidden[{i}]", h, minimum=1)
                                                 for i, h in enumerate(self.hidden)))
        for name, lo in (("width", 1), ("n_train", 2), ("n_val", 1), ("n_test", 1), ("split_seed", 0),
                         ("epochs", 1), ("batch_size", 1), ("evals_per_epoch", 1), ("n_trials", 1), ("seeds", 1),
                         ("lanczos_steps", 1), ("track_subset", 1), ("ablation_seeds", 1), ("n_workers", 1),
                         ("threads", 1)):
            nonneg_int(name, getattr(self, name), minimum=lo)
        # T_c < 1 is the optimizers' own error (DCAO checks it): say it here, before any run starts
        if isinstance(self.curvature_every, bool) or not isinstance(self.curvature_every, numbers.Integral) \
                or self.curvature_every < 1:
            raise ValueError(f"curvature_every (DCAO's probe period T_c) must be an integer >= 1, "
                             f"got {self.curvature_every!r}")
        in_range("target_fraction", self.target_fraction, 0.0, 1.0, lo_open=True)
        if isinstance(self.optimizers, str) or not isinstance(self.optimizers, (tuple, list)):
            raise TypeError(f"optimizers must be a list of names, got {self.optimizers!r}")
        names = tuple(self.optimizers)
        unknown = [n for n in names if n not in OPTIMIZERS]
        if unknown:
            raise ValueError(f"optimizers: unknown name(s) {unknown}; known: {list(OPTIMIZERS)}")
        if not names:
            raise ValueError("optimizers must name at least one optimizer")
        if len(set(names)) != len(names):
            raise ValueError(f"optimizers lists a name twice: {list(names)}")
        object.__setattr__(self, "optimizers", names)
        choice("device", self.device.split(":")[0], ("cpu", "cuda", "mps"))

    # ------------------------------------------------------------------ presets
    @classmethod
    def quick(cls, **overrides) -> ClaimsConfig:
        """A small study that runs end to end in well under a minute on a CPU (for tests and CI).

        Its verdicts mean little (2 trials, 2 seeds, 4 epochs on 300 digits): it checks the
        machinery, not the claims.
        """
        kw = dict(hidden=(32,), n_train=300, n_val=150, n_test=150, epochs=4, batch_size=50, evals_per_epoch=1,
                  n_trials=2, seeds=2, lanczos_steps=6, curvature_every=3, track_subset=64, ablation_seeds=1)
        kw.update(overrides)
        return cls(**kw)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ClaimsConfig:
        """A config from a dict (e.g. a TOML/JSON file); unknown keys are refused by name."""
        if not isinstance(d, dict):
            raise TypeError(f"a claims configuration must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"claims configuration: unknown field(s) {unknown}; known: {sorted(known)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


def changed_fields(old: dict, new: dict) -> list[str]:
    """The fields whose values differ between two configurations (as dicts), as 'name: old -> new'."""
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<absent>") != new.get(k, "<absent>"):
            out.append(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
    return out


def check_resume(out: Path, config: ClaimsConfig) -> None:
    """Write ``out/config.json``, or check that the study there has this configuration.

    Raises ValueError naming each changed field: a study's stores hold runs of one
    configuration, and resuming with another would mix them in one report.
    """
    out = Path(out)
    path = out / CONFIG_FILE
    new = config.to_dict()
    if path.exists():
        old = json.loads(path.read_text())
        diff = changed_fields(old, new)
        if diff:
            raise ValueError(f"the study in {out} was run with another configuration; changed: "
                             f"{'; '.join(diff)}. Resume it with its own configuration, or use another "
                             "output directory (its results are not mixed with these)")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(new, indent=1))
    tmp.replace(path)
