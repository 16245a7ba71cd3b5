"""What one search stage is asked to do (its trials, epochs, search and scheduler) and what each
of its trials may use: the parts of a study spec a stage runner reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scheduler(Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class Stage(Strict):
    trials: int = Field(ge=1)
    epochs: int = Field(ge=1)
    search: Literal["random", "grid", "optuna"] = "random"
    scheduler: Scheduler = Scheduler()

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


class Resources(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
