"""The sanity checks' record: verdicts, probes and settings, as plain data (no torch), so
whoever reads a study's checks (the CLI, the report, MLflow) need not import the checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, WARN, FAIL = "pass", "warn", "fail"
TOO_LOW, LEARNS, EXPLODES = "too low", "learns", "explodes"
CHECKS = ("data", "initial_loss", "regularization", "overfit", "lr_probe", "update_ratio")
CHECKS += ("beats_chance",)
RATIO_RANGE = (1e-4, 1e-2)  # update / weight per step, around the lecture's 1e-3


@dataclass(frozen=True)
class SanitySettings:
    """How hard the checks look. The defaults take seconds on faces and well under a minute
    on CIFAR-10 on a 2-core CPU; tests pick ``checks`` and fewer probe learning rates."""

    sample: int = 1024
    strong_l2: float = 1e3
    loss_tolerance: float = 0.1
    overfit_examples: int = 20
    overfit_steps: int = 300
    overfit_lrs: tuple[float, ...] = (0.1, 0.01)
    probe_lrs: tuple[float, ...] = tuple(10.0**k for k in range(-7, 2))
    probe_steps: int = 50
    min_fall: float = 0.01
    ratio_steps: int = 10
    val_images: int = 2000
    checks: tuple[str, ...] = CHECKS


@dataclass(frozen=True)
class Check:
    """One check's verdict: what it measured against what it expected, and, for whoever reads
    a warn or a fail, what that usually means."""

    name: str
    status: str
    measured: str
    expected: str
    meaning: str
    hard: bool
    values: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.hard and self.status == FAIL


@dataclass(frozen=True)
class Probe:
    """A short run at one learning rate: batch losses, its verdict, and the first steps'
    update / weight ratio per layer."""

    lr: float
    verdict: str
    losses: list[float]
    before: float
    after: float
    ratios: dict[str, float]


@dataclass(frozen=True)
class SanityReport:
    checks: list[Check]
    probes: list[Probe]
    lr_range: tuple[float, float] | None
    seconds: float

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **asdict(self)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SanityReport:
        lr_range = record["lr_range"]
        return cls(
            checks=[Check(**c) for c in record["checks"]],
            probes=[Probe(**p) for p in record["probes"]],
            lr_range=tuple(lr_range) if lr_range else None,
            seconds=record["seconds"],
        )
