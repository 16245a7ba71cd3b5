"""A trial's status, one vocabulary for the training loop, the scheduler and every table."""

from __future__ import annotations

from enum import StrEnum


class TrialStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    STOPPED = "stopped_by_asha"  # ASHA ended it at a rung: scored at an earlier epoch
    ERRORED = "errored"


FINISHED = (TrialStatus.COMPLETED, TrialStatus.STOPPED, TrialStatus.DIVERGED, TrialStatus.ERRORED)
USABLE = (TrialStatus.COMPLETED, TrialStatus.STOPPED)  # the ones that rank
