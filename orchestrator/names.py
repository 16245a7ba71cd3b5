"""The study's fixed names, defined once: its steps, its budgets, the metric that ranks trials,
and how long a study waits for a tracking server that went away."""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    """A study's steps, in order; a study runs up to one of them (its target)."""

    SANITY = "sanity"
    COARSE = "coarse"
    FINE = "fine"
    FINAL = "final"

    @property
    def order(self) -> int:
        return list(Step).index(self)


SEARCH_STAGES = (Step.COARSE, Step.FINE)


class BudgetName(StrEnum):
    SMOKE = "smoke"
    DEMO = "demo"
    FULL = "full"


METRIC, MODE = "val_acc", "max"  # what ranks trials, for Tune, ASHA, narrowing and the tables
TRACKING_WAIT_S = 120.0
