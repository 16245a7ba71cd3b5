"""Who watches a study: the hooks a study calls as it goes. The study does not know who listens
(the console, the MLflow record, a report); a study with no observer runs the same."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.search.events import StageEvents

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.search.space import Param
    from orchestrator.search.stage import StageRun
    from orchestrator.study.folder import StudyFolder
    from orchestrator.study.plan import Plan
    from orchestrator.study.records import FinalRecord, NarrowingRecord, SanityRecord, Summary
    from orchestrator.study.spec import StudySpec
    from trainables.config import TrialConfig
    from trainables.datasets import DataSplits
    from trainables.epoch import EpochReport
    from trainables.sanity_report import SanitySettings


@dataclass(frozen=True)
class StudyStarted:
    """What a study is about to do: its spec, its plan, its folder and its data."""

    spec: StudySpec
    plan: Plan
    path: Path
    data: DataSplits


class StudyObserver(StageEvents):
    """Every hook does nothing; an observer overrides the ones it needs. Hooks run in the
    study's process (trial hooks too: the stage runner forwards them from its trials)."""

    speaks = False  # it tells a person what happens (the console): see Observers

    def study_started(self, started: StudyStarted) -> None: ...

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

    def observer_failed(self, observer: str, hook: str, error: Exception) -> None:
        """``observer`` raised ``error`` in ``hook`` and watches no more."""


def stopped_watching(observer: str, hook: str, error: Exception) -> str:
    first = (str(error).splitlines() or [""])[0][:160]
    return (
        f"warning  {observer} stopped watching: {type(error).__name__} in {hook} ({first}); "
        "the study goes on, and the study folder keeps every record"
    )


class Observers(StudyObserver):
    """Several observers as one: each hook calls every observer in order. One that raises is
    said in one line (the others' ``observer_failed``; on stderr when none left ``speaks``) and
    detached; the study goes on, since its record is the study folder, not what an observer
    shows or copies of it."""

    def __init__(self, observers: Sequence[StudyObserver] = ()) -> None:
        self.all = list(observers)

    def each(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for observer in list(self.all):
            if observer not in self.all:  # detached meanwhile (it raised when told of another)
                continue
            try:
                getattr(observer, hook)(*args, **kwargs)
            except Exception as exc:
                if observer in self.all:
                    self.all.remove(observer)
                    self.observer_failed(type(observer).__name__, hook, exc)
                    if not any(o.speaks for o in self.all):
                        print(stopped_watching(type(observer).__name__, hook, exc), file=sys.stderr)


def _fan_out(hook: str) -> Callable[..., None]:
    def call(self: Observers, *args: Any, **kwargs: Any) -> None:
        self.each(hook, *args, **kwargs)

    call.__name__ = call.__qualname__ = hook
    return call


for _hook in [name for name in dir(StudyObserver) if not name.startswith("_")]:
    setattr(Observers, _hook, _fan_out(_hook))
