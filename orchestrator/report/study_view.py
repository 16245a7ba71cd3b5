"""Everything a report shows, read once from the study folder (finished or still running), so
that the views are pure functions of one typed value and tests can plant any study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from orchestrator.names import round_stage
from orchestrator.search.ranking import rank
from orchestrator.search.results import StageTables
from orchestrator.search.space import Param
from orchestrator.study.folder import StudyFolder
from orchestrator.study.records import FinalRecord, NarrowingRecord, SanityRecord
from trainables.errors import BabysitterError


@dataclass(frozen=True)
class StageView:
    """One search round: its tables, its trials best first (``ranked``) and its space."""

    name: str
    tables: StageTables
    ranked: pd.DataFrame
    space: dict[str, Param]
    within: str | None = None  # the scheduler's: ASHA's rungs kept per value of this choice

    @property
    def best(self) -> pd.Series | None:
        return self.ranked.iloc[0] if len(self.ranked) else None


@dataclass(frozen=True)
class StudyView:
    name: str
    budget: str
    stages: list[StageView] = field(default_factory=list)
    narrowings: list[NarrowingRecord] = field(default_factory=list)
    sanity: SanityRecord | None = None
    probe_plot: Path | None = None
    final: FinalRecord | None = None
    top_k: int = 10  # the spec's narrowing.top_k: how many trials each round's table shows

    @property
    def searched(self) -> list[str]:
        """The numeric searched parameters, in the spec's order (lr and l2 for the presets)."""
        if not self.stages:
            return []
        return [name for name, p in self.stages[0].space.items() if p.numeric]

    @property
    def choices(self) -> list[str]:
        """The searched settings that take one of a list of values (choice and grid)."""
        if not self.stages:
            return []
        return [name for name, p in self.stages[0].space.items() if not p.numeric]


def read_study(path: Path) -> StudyView:
    folder = StudyFolder(path)
    if not folder.spec_file.exists():
        raise BabysitterError(
            f"STUDY_DIR {str(path)!r} is not a study folder (no spec.yaml); pass the folder a "
            "`babysit run` wrote, e.g. studies/faces-demo"
        )
    spec = folder.read_spec()
    stages = []
    for name in folder.rounds_done():
        tables = folder.read_stage(name)
        if tables is None:
            continue
        space = _space(folder, spec, name)
        within = spec.stage(name).scheduler.within
        stages.append(StageView(name, tables, rank(tables.trials), space, within))
    narrowings = [n for s in stages[1:] if (n := folder.read_narrowing(s.name))]
    last = folder.read_narrowing(round_stage(len(stages) + 1)) if stages else None
    if last is not None:
        narrowings.append(last)
    return StudyView(
        name=spec.name,
        budget=str(spec.budget),
        stages=stages,
        narrowings=narrowings,
        sanity=folder.read_sanity(),
        probe_plot=folder.probe_plot if folder.probe_plot.exists() else None,
        final=folder.read_final(),
        top_k=spec.narrowing.top_k,
    )


def _space(folder: StudyFolder, spec, stage: str) -> dict[str, Param]:
    try:
        return folder.stage_space(spec, stage)
    except BabysitterError:  # lr: auto and no sanity record: the space the trials span
        return {}
