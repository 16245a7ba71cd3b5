"""Who watches a study: the hooks a study calls as it goes. The study does not know who listens
(the console, the MLflow record, a report); a study with no observer runs the same."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.status import TrialStatus

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.search.space import Param
    from orchestrator.search.stage import StageRun
    from orchestrator.study.folder import (
        FinalRecord,
        NarrowingRecord,
        SanityRecord,
        StudyFolder,
        Summary,
    )
    from orchestrator.study.pipeline import Study
    from trainables.config import TrialConfig
    from trainables.sanity_report import SanitySettings
    from trainables.train import EpochReport


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


class StudyObserver:
    """Every hook does nothing; an observer overrides the ones it needs. Hooks run in the
    study's process (trial hooks too: the stage runner forwards them from its trials)."""

    def study_started(self, study: Study) -> None: ...

    def sanity_started(self, settings: SanitySettings) -> None: ...

    def sanity_finished(
        self, record: SanityRecord, folder: StudyFolder, *, reused: bool
    ) -> None: ...

    def sanity_skipped(self) -> None: ...

    def lr_resolved(self, lr: Param) -> None: ...

    def lr_range_missed(self, lr: Param, learns: tuple[float, float], share: float) -> None:
        """The spec's lr range covers only ``share`` (< LR_COVERAGE) of the range where the
        sanity checks' lr probe saw the loss fall."""

    def range_capped(self, old: Param, new: Param, why: str) -> None:
        """The coarse stage searches ``new``, not the spec's ``old``: the rest is futile."""

    def stage_started(self, run: StageRun) -> None: ...

    def stage_resumed(self, stage: str, path: Path) -> None: ...

    def trial_started(self, stage: str, trial: TrialInfo) -> None: ...

    def trial_epoch(self, stage: str, trial: TrialInfo, result: dict[str, Any]) -> None: ...

    def trial_finished(
        self, stage: str, trial: TrialInfo, status: TrialStatus, epochs: int
    ) -> None: ...

    def stage_progress(self, stage: str, tally: StageTally) -> None: ...

    def stage_ended(self, stage: str) -> None:
        """The runner is done with the stage (its trials report nothing more)."""

    def stage_results(
        self, stage: str, trials: pd.DataFrame, searched: list[str], top_k: int, path: Path
    ) -> None:
        """The stage's table, whether it ran now or in an earlier run (``path``: its file)."""

    def narrowing_decided(self, record: NarrowingRecord) -> None: ...

    def candidates_started(self, candidates: int, seeds: int, epochs: int) -> None: ...

    def candidates_scored(self, table: pd.DataFrame, path: Path) -> None:
        """Per candidate (index: trial id): mean score over its seeds, spread, val loss."""

    def final_started(self, config: TrialConfig, *, reused: Path | None) -> None: ...

    def final_epoch(self, config: TrialConfig, report: EpochReport) -> None: ...

    def final_result(self, record: FinalRecord, searched: list[str]) -> None: ...

    def step_finished(self, step: str) -> None:
        """The step's record is complete in the study folder."""

    def study_finished(self, summary: Summary) -> None: ...

    def study_failed(self, error: Exception) -> None: ...


class Observers:
    """Several observers as one: each hook calls every observer in order."""

    def __init__(self, observers: Sequence[StudyObserver] = ()) -> None:
        self.all = tuple(observers)

    def __getattr__(self, hook: str) -> Any:
        if hook.startswith("_") or not callable(getattr(StudyObserver, hook, None)):
            raise AttributeError(hook)

        def call(*args: Any, **kwargs: Any) -> None:
            for observer in self.all:
                getattr(observer, hook)(*args, **kwargs)

        return call
