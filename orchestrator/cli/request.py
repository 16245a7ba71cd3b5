"""What a study command asks for, built once from its options: the spec with the command line's
changes, the budget and the study folder. `run`, `sanity`, `search` and `submit` all start
from one, so a flag means the same everywhere and the default folder is named in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.names import BudgetName
from orchestrator.study.spec import StudySpec, load_spec

STUDIES = Path("studies")  # where a study's folder goes unless --study-dir names one


@dataclass(frozen=True)
class StudyRequest:
    study: str  # the preset or spec file, as given
    spec: StudySpec  # with the command line's data and resources
    budget: BudgetName
    study_dir: Path | None
    flags: dict[str, Any]  # the command line's changes, for a cluster job's own `babysit run`
    skip_sanity: bool = False

    @classmethod
    def from_options(
        cls,
        *,
        study: str,
        budget: str,
        study_dir: Path | None = None,
        data: str | None = None,
        split_seed: int | None = None,
        cpus_per_trial: float | None = None,
        gpus_per_trial: float | None = None,
        max_concurrent: int | None = None,
        fuse: str | None = None,
        skip_sanity: bool = False,
    ) -> StudyRequest:
        trial = {k: v for k, v in {"data": data, "split_seed": split_seed}.items() if v is not None}
        resources = {
            "cpus_per_trial": cpus_per_trial,
            "gpus_per_trial": gpus_per_trial,
            "max_concurrent": max_concurrent,
            "fuse": fuse,
        }
        spec = load_spec(study, **trial).with_resources(**resources)
        flags = {**trial, **{k: v for k, v in resources.items() if v is not None}}
        return cls(study, spec, BudgetName(budget), study_dir, flags, skip_sanity)

    def with_resources(self, **resources: float | str) -> StudyRequest:
        spec = self.spec.with_resources(**resources)
        return dataclasses.replace(self, spec=spec, flags={**self.flags, **resources})

    def folder(self, root: Path = STUDIES) -> Path:
        """The study folder: --study-dir, or ``root/NAME-BUDGET``."""
        return self.study_dir or root / f"{self.spec.name}-{self.budget}"
