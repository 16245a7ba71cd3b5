"""What one search stage is asked to do (its trials, epochs, search and scheduler) and what each
of its trials may use: the parts of a study spec a stage runner reads."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scheduler(Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    # a searched choice: ASHA keeps one set of rungs per value, so that a value that learns
    # slower in the first epochs (augmentation, a decaying schedule) competes with its own kind
    within: str | None = None

    def group(self, params: Mapping[str, Any]) -> str:
        """The rungs a trial with these settings is judged at ('' when all share one set)."""
        if self.within is None or self.within not in params:
            return ""
        return f"{self.within}={params[self.within]}"


class Stage(Strict):
    trials: int = Field(ge=1)
    epochs: int = Field(ge=1)
    search: Literal["random", "grid", "optuna"] = "random"
    scheduler: Scheduler = Scheduler()

    def problem(self, name: str, choices: Collection[str]) -> str | None:
        """What makes this stage impossible to run, given the space's searched choices."""
        scheduler = self.scheduler
        if scheduler.grace_period > self.epochs:
            return (
                f"{name}.scheduler.grace_period={scheduler.grace_period} is more than "
                f"{name}.epochs={self.epochs}; lower it"
            )
        if scheduler.within is not None and scheduler.within not in choices:
            known = ", ".join(choices) or "none"
            return (
                f"{name}.scheduler.within={scheduler.within}: must name a searched choice "
                f"(searched choices: {known}); write it as {{choice: [...]}} or drop within"
            )
        return None

    def capped(self, trials: int, epochs: int) -> Stage:
        epochs = min(self.epochs, epochs)
        grace = min(self.scheduler.grace_period, epochs)
        return self.model_copy(
            update={
                "trials": min(self.trials, trials),
                "epochs": epochs,
                "scheduler": self.scheduler.model_copy(update={"grace_period": grace}),
            }
        )


FUSE_AUTO, FUSE_OFF = "auto", "off"


class Resources(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    # a stage's trials trained K at a time as one stacked model (trainables.fused), each group
    # on one trial's resources: auto (GPU trials: K measured; CPU trials: off), off, or K
    fuse: Literal["auto", "off"] | int = FUSE_AUTO

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse(cls, value: Any) -> str | int:
        if value is False:  # YAML reads a bare off as false
            return FUSE_OFF
        if value in (FUSE_AUTO, FUSE_OFF):
            return value
        text = str(value).strip()
        if not isinstance(value, bool | float) and text.isdigit() and int(text) >= 1:
            return int(text)
        raise ValueError("must be auto, off or a group size K >= 1 (4 trains trials in fours)")

    def fused_size(self) -> int | None:
        """K when the spec names it; 1 for off; None for auto (the runner decides)."""
        if self.fuse == FUSE_AUTO:
            return None
        return 1 if self.fuse == FUSE_OFF else int(self.fuse)
