"""The live view of a stage: one line whenever a trial finishes or the best result improves."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ray import tune

from orchestrator.results import COMPLETED, DIVERGED, ERRORED, STOPPED, trial_status


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class StageProgress(tune.Callback):
    """Counts trials by status from Tune's own trial list, so a resumed stage starts from the
    right counts."""

    def __init__(self, stage: str, trials: int, epochs: int, echo: Callable[[str], None]) -> None:
        self.stage, self.trials, self.epochs, self.echo = stage, trials, epochs, echo
        self.setup()

    def setup(self, **info: Any) -> None:
        self.start = time.monotonic()
        self.best = float("-inf")
        self.shown: tuple = ()

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        counts = Counter(trial_status(t.status, t.last_result or {}, self.epochs) for t in trials)
        for t in trials:
            last = t.last_result or {}
            if "val_acc" in last and last.get("trial_status") != DIVERGED:
                self.best = max(self.best, last["val_acc"])
        done = sum(counts[s] for s in (COMPLETED, STOPPED, DIVERGED, ERRORED))
        if (done, self.best) == self.shown:
            return
        self.shown = (done, self.best)
        elapsed = time.monotonic() - self.start
        self.echo(self.line(counts, done, elapsed))

    def line(self, counts: Counter, done: int, elapsed: float) -> str:
        best = f"best val_acc {self.best:.4f}" if self.best > float("-inf") else "best -"
        left = ""
        if 0 < done < self.trials:
            left = f", ~{format_seconds(elapsed / done * (self.trials - done))} left"
        return (
            f"{self.stage:<6} {done:>3}/{self.trials} done | running {counts['running']} "
            f"completed {counts[COMPLETED]} stopped {counts[STOPPED]} "
            f"diverged {counts[DIVERGED]} errored {counts[ERRORED]} | {best} | "
            f"{format_seconds(elapsed)}{left}"
        )
