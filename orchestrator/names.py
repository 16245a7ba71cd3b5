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


def round_stage(number: int) -> str:
    """The stage that runs search round ``number`` (from 1): coarse, fine, fine2, fine3, ..."""
    if number < 1:
        raise ValueError(f"round {number}: rounds count from 1")
    return {1: Step.COARSE, 2: Step.FINE}.get(number, f"{Step.FINE}{number - 1}")


def round_number(stage: str) -> int:
    """The round a search stage runs (``round_stage``'s inverse)."""
    if stage == Step.COARSE:
        return 1
    suffix = stage.removeprefix(Step.FINE)
    if not stage.startswith(Step.FINE) or not (suffix == "" or suffix.isdigit()):
        raise ValueError(f"{stage!r} is not a search stage (coarse, fine, fine2, ...)")
    return int(suffix) + 1 if suffix else 2


class BudgetName(StrEnum):
    SMOKE = "smoke"
    DEMO = "demo"
    FULL = "full"


METRIC, MODE = "val_acc", "max"  # what ranks trials, for Tune, ASHA, narrowing and the tables
WARNING = "warning"  # a trial's report may carry one line for the user (said once)
TRACKING_WAIT_S = 120.0
STOPPED_MARK = "stopped-on-a-full-disk"  # in a stage's folder: its errored trials run again
