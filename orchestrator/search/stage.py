"""One search stage: what it runs (a ``StageRun``) and who runs it (a ``StageRunner``: Ray Tune
with ASHA, or in this process for tests and tiny studies). Runners report the trials' progress
to the study's observers and return the stage's tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.search.events import StageEvents, StageTally
from orchestrator.search.results import StageTables
from orchestrator.search.space import Param
from orchestrator.search.stage_spec import Resources, Stage
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.status import FINISHED


@dataclass(frozen=True)
class StageRun:
    """Everything one stage needs besides the data."""

    name: str
    stage: Stage
    space: dict[str, Param]
    base: TrialConfig
    resources: Resources
    retries: int
    storage: Path
    seed: int = 0

    @property
    def path(self) -> Path:
        return self.storage.resolve() / self.name

    @property
    def trial_count(self) -> int:
        grid = 1
        for param in self.space.values():
            if param.kind == "grid":
                grid *= len(param.values)
        return self.stage.trials * grid

    def trial_base(self) -> TrialConfig:
        """The config every trial starts from: the stage's epochs, a thread per CPU."""
        threads = max(1, int(self.resources.cpus_per_trial))
        return self.base.replace(epochs=self.stage.epochs, threads=threads)


class StageRunner(Protocol):
    def run(self, run: StageRun, data: DataSplits, events: StageEvents) -> StageTables:
        """Run (or finish, after an interruption) the stage; return its tables."""
        ...


class Tally:
    """Counts a running stage's trials by status and the best of their latest scores (a trial
    scores by its last epoch, as in the tables, not its best one); says when the counts moved,
    or the best did and ``QUIET_S`` passed since it last said so (a stretched stage reports
    many short epochs)."""

    QUIET_S = 10.0

    def __init__(self, total: int) -> None:
        self.total = total
        self.best: float | None = None
        self.shown: tuple = ()
        self.said_at = -self.QUIET_S

    def update(
        self, statuses: Iterable[str], scores: Iterable[float], elapsed_s: float
    ) -> StageTally | None:
        counts = Counter(statuses)
        self.best = max(scores, default=None)
        done = sum(counts[s] for s in FINISHED)
        if (done, self.best) == self.shown:
            return None
        if self.shown and done == self.shown[0] and elapsed_s - self.said_at < self.QUIET_S:
            return None
        self.shown, self.said_at = (done, self.best), elapsed_s
        return StageTally(done, self.total, dict(counts), self.best, elapsed_s)
