"""What a running stage tells whoever watches it: its trials starting, reporting and ending, and
how far it has got. The study's observers take these hooks and add their own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.status import TrialStatus


@dataclass(frozen=True)
class TrialInfo:
    """A trial as a stage runner knows it while it runs: its id and its sampled settings."""

    trial_id: str
    config: dict[str, Any]


@dataclass(frozen=True)
class StageTally:
    """Where a running stage stands: trials done of all, counts by status, best score."""

    done: int
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    best: float | None = None
    elapsed_s: float = 0.0


class StageEvents:
    """Every hook does nothing; a watcher overrides the ones it needs. Hooks run in the
    driver's process (trial hooks too: the stage runner forwards them from its trials)."""

    def stage_resumed(self, stage: str, path: Path) -> None: ...

    def trial_started(self, stage: str, trial: TrialInfo) -> None: ...

    def trial_epoch(self, stage: str, trial: TrialInfo, result: dict[str, Any]) -> None: ...

    def trial_finished(
        self, stage: str, trial: TrialInfo, status: TrialStatus, epochs: int
    ) -> None: ...

    def stage_progress(self, stage: str, tally: StageTally) -> None: ...

    def stage_fused(self, stage: str, line: str) -> None:
        """How a stage asked to fuse trains: its groups' size, or why it trains unfused."""

    def stage_ended(self, stage: str) -> None:
        """The runner is done with the stage (its trials report nothing more)."""
