"""The one typed config that flows from the CLI (and later a study spec) to a trial."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

DATASETS = ("cifar10", "faces", "imagefolder")
OPTIMIZERS = ("sgd", "adam", "adamw")
SEED_CNN = "seed-cnn"
SEED_KNOBS = ("batch_norm", "he_init", "dropout", "width")  # the seed CNN's own arguments
LR_SCHEDULES = ("constant", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs; a search samples new values into a copy of it.

    Data fields pick and split the images (the split seed is separate from the training seed so
    that every trial of a study sees the same validation and test images). ``cv_folds`` >= 2
    scores the config by k-fold cross-validation on train + val instead of on val.
    """

    dataset: str = "faces"
    data: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    train_subset: int | None = None
    cv_folds: int = 0

    # seed-cnn, torchvision.<name>, package.module:factory or path/to/file.py:factory
    model: str = SEED_CNN
    arch: dict[str, Any] = dataclasses.field(default_factory=dict)  # the factory's arguments
    batch_norm: bool = False
    he_init: bool = False
    dropout: float = 0.0
    width: float = 1.0

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    l2: float = 1e-4
    weight_decay: float = 0.0  # adamw's decoupled decay
    batch_size: int = 64
    epochs: int = 10
    lr_schedule: str = "constant"
    lr_step_epochs: int = 5
    lr_step_gamma: float = 0.1
    augment: bool = False

    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    divergence_factor: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", model_reference(self.model))
        for rule in _RULES:
            rule(self)

    def replace(self, **changes: Any) -> TrialConfig:
        """A validated copy with some fields changed (how a search makes a trial's config);
        ``arch.NAME`` changes one argument of the model."""
        arch = {k.removeprefix(ARCH): v for k, v in changes.items() if k.startswith(ARCH)}
        changes = {k: v for k, v in changes.items() if not k.startswith(ARCH)}
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; known: {', '.join(field_names())}")
        if arch:
            changes["arch"] = {**changes.get("arch", self.arch), **arch}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """One column per setting, the model's arguments as ``arch.NAME``: a table's row."""
        return flat(self.to_dict())


ARCH = "arch."  # a model argument's name in a search space, a table, MLflow's params


def flat(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config (config.json) as tables and searches name its settings."""
    arch = config.get("arch") or {}
    return {
        **{k: v for k, v in config.items() if k != "arch"},
        **{ARCH + k: v for k, v in arch.items()},
    }


def is_file_reference(model: Any) -> bool:
    """``path/to/file.py:factory`` (not seed-cnn, torchvision.NAME or package.module:factory)."""
    return isinstance(model, str) and ".py:" in model


def model_reference(model: Any) -> Any:
    """A user's model file as an absolute path: trials run in folders of their own."""
    if is_file_reference(model):
        path, _, factory = model.rpartition(":")
        return f"{Path(path).expanduser().absolute()}:{factory}"
    return model


def field_names() -> list[str]:
    return [f.name for f in fields(TrialConfig)]


def default(name: str) -> Any:
    """The dataclass default of one field, so that the CLI never restates it."""
    field = TrialConfig.__dataclass_fields__[name]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: {rule}")


def _positive(name: str):
    def rule(c: TrialConfig) -> None:
        v = getattr(c, name)
        _check(isinstance(v, int | float) and math.isfinite(v) and v > 0, name, v, "must be > 0")

    return rule


def _fraction(name: str, low_inclusive: bool):
    def rule(c: TrialConfig) -> None:
        v = getattr(c, name)
        ok = isinstance(v, int | float) and (0 <= v < 1 if low_inclusive else 0 < v < 1)
        _check(ok, name, v, "must be in [0, 1)" if low_inclusive else "must be in (0, 1)")

    return rule


def _one_of(name: str, choices: tuple[str, ...]):
    def rule(c: TrialConfig) -> None:
        v = getattr(c, name)
        _check(v in choices, name, v, f"must be one of {', '.join(choices)}")

    return rule


def _int_at_least(name: str, low: int, optional: bool = False):
    def rule(c: TrialConfig) -> None:
        v = getattr(c, name)
        if optional and v is None:
            return
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
        _check(ok, name, v, f"must be an integer >= {low}")

    return rule


def _l2(c: TrialConfig) -> None:
    ok = isinstance(c.l2, int | float) and math.isfinite(c.l2) and c.l2 >= 0
    _check(ok, "l2", c.l2, "must be >= 0")


def _cv_folds(c: TrialConfig) -> None:
    v = c.cv_folds
    ok = isinstance(v, int) and not isinstance(v, bool) and (v == 0 or v >= 2)
    _check(ok, "cv_folds", v, "must be 0 (score on the validation split) or an integer >= 2")


def _divergence(c: TrialConfig) -> None:
    v = c.divergence_factor
    _check(isinstance(v, int | float) and v > 1, "divergence_factor", v, "must be > 1")


def _model(c: TrialConfig) -> None:
    _check(isinstance(c.model, str) and c.model != "", "model", c.model, "must name a network")
    _check(isinstance(c.arch, dict), "arch", c.arch, "must be a mapping of the model's arguments")
    if c.model == SEED_CNN and c.arch:
        raise ConfigError(
            f"invalid arch={c.arch!r} for model seed-cnn: its arguments are the trial settings "
            f"{', '.join(SEED_KNOBS)}"
        )
    changed = [k for k in SEED_KNOBS if getattr(c, k) != default(k)]
    if c.model != SEED_CNN and changed:
        raise ConfigError(
            f"invalid {changed[0]}={getattr(c, changed[0])!r} with model {c.model!r}: it is an "
            f"argument of seed-cnn; give {c.model}'s own arguments under arch"
        )


def _weight_decay(c: TrialConfig) -> None:
    v = c.weight_decay
    _check(
        isinstance(v, int | float) and math.isfinite(v) and v >= 0,
        "weight_decay",
        v,
        "must be >= 0",
    )
    if v and c.optimizer != "adamw":
        raise ConfigError(
            f"invalid weight_decay={v} with optimizer={c.optimizer!r}: weight_decay is adamw's "
            "decoupled decay; use optimizer adamw, or l2 for a penalty in the loss"
        )


def _nesterov(c: TrialConfig) -> None:
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        raise ConfigError(
            f"invalid nesterov=True with optimizer={c.optimizer!r}, momentum={c.momentum}: "
            "Nesterov needs optimizer sgd and momentum > 0"
        )


_RULES = (
    _one_of("dataset", DATASETS),
    _fraction("val_fraction", low_inclusive=False),
    _fraction("test_fraction", low_inclusive=False),
    _int_at_least("split_seed", 0),
    _int_at_least("train_subset", 2, optional=True),
    _cv_folds,
    _fraction("dropout", low_inclusive=True),
    _positive("width"),
    _one_of("optimizer", OPTIMIZERS),
    _positive("lr"),
    _fraction("momentum", low_inclusive=True),
    _l2,
    _int_at_least("batch_size", 1),
    _int_at_least("epochs", 1),
    _one_of("lr_schedule", LR_SCHEDULES),
    _int_at_least("lr_step_epochs", 1),
    _positive("lr_step_gamma"),
    _int_at_least("seed", 0),
    _one_of("device", DEVICES),
    _int_at_least("threads", 1, optional=True),
    _divergence,
    _nesterov,
    _model,
    _weight_decay,
)
