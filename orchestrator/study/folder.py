"""The study folder, the study's source of truth: its spec, its state, the sanity result, each
stage's tables, the narrowing decision, the final run and the summary. Every view (console,
MLflow, reports) reads them here, as typed records; writes are atomic (write, then rename), and
a damaged file is named in one line with what to do about it."""

from __future__ import annotations

import dataclasses
import json
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from orchestrator.names import Step, round_stage
from orchestrator.search.results import StageTables, disagreement
from orchestrator.search.space import Param
from orchestrator.study.model_files import keep_copies
from orchestrator.study.records import (
    FinalRecord,
    NarrowingRecord,
    SanityRecord,
    StudyState,
    Summary,
)
from orchestrator.study.spec import StudySpec, parse_saved_spec
from trainables.errors import BabysitterError
from trainables.files import replacing, write_text
from trainables.metric_names import TRIAL_STATUS
from trainables.metrics import ClassificationReport

T = TypeVar("T")


@dataclass(frozen=True)
class StudyFolder:
    path: Path

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "study.json"

    @property
    def results(self) -> Path:
        return self.path / "results"

    @property
    def ray(self) -> Path:
        return self.path / "ray"

    @property
    def code(self) -> Path:
        """Copies of the user's model files the study trains (see model_files)."""
        return self.path / "code"

    @property
    def logs(self) -> Path:
        """Ray's log and the tracebacks of failed runs: what the console leaves out."""
        return self.path / "logs"

    @property
    def narrowing_file(self) -> Path:
        return self.narrowing_file_for(Step.FINE)

    def narrowing_file_for(self, into: str) -> Path:
        """The narrowing that made round ``into``'s space (narrowing.json for fine)."""
        return self.path / ("narrowing.json" if into == Step.FINE else f"narrowing-{into}.json")

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def input_example(self) -> Path:
        """Two normalized test images: the logged model's input example."""
        return self.final / "input_example.npy"

    @property
    def sanity_file(self) -> Path:
        return self.path / "sanity.json"

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    def figures_dir(self, step: str) -> Path:
        """The report's figures as of ``step`` (what its MLflow run holds as artifacts)."""
        return self.path / "report" / step

    def figures(self, step: str) -> list[Path]:
        directory = self.figures_dir(step)
        return sorted(directory.glob("*.png")) if directory.is_dir() else []

    def diagnosis_file(self, step: str) -> Path:
        """The report's diagnosis as of ``step``: its findings in words, one per line."""
        return self.figures_dir(step) / "diagnosis.txt"

    def read_diagnosis(self, step: str) -> list[str] | None:
        """The findings recorded at ``step`` (empty: none fired), or None if not diagnosed."""
        path = self.diagnosis_file(step)
        return path.read_text().splitlines() if path.exists() else None

    @property
    def probe_plot(self) -> Path:
        return self.path / "sanity_lr_probe.png"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def candidates_file(self) -> Path:
        """The final choice's runs: each top candidate with each seed (``final.seeds``)."""
        return self.results / "candidates.parquet"

    def stage_files(self, stage: str) -> tuple[Path, Path]:
        return self.results / f"{stage}.parquet", self.results / f"{stage}_epochs.parquet"

    # the spec and the state

    def exists(self) -> bool:
        return self.spec_file.exists()

    def read_spec(self) -> StudySpec:
        if not self.exists():
            raise BabysitterError(
                f"STUDY_DIR {str(self.path)!r} holds no study (no spec.yaml); start one with "
                "`babysit run STUDY --study-dir DIR`"
            )
        return parse_saved_spec(self.spec_file.read_text(), str(self.spec_file))

    def read_state(self) -> StudyState:
        if not self.state_file.exists():
            return StudyState()
        return _read(self.state_file, "restore it or start a new study", StudyState.from_dict)

    def update_state(self, **changes: Any) -> StudyState:
        state = dataclasses.replace(self.read_state(), **changes)
        _write_json(self.state_file, state.to_dict())
        return state

    def study_id(self) -> str:
        """A stable id for this study's runs, so that studies of one spec sharing a tracking
        server never mix; made on first use for folders older than it."""
        state = self.read_state()
        if state.study_id is None:
            state = self.update_state(study_id=uuid.uuid4().hex[:12])
        return state.study_id

    def create(self, spec: StudySpec, target: Step, code: dict[str, Path] | None = None) -> None:
        """Write the spec and keep a copy of each ``code`` file, or check that the folder's
        study is this one: a study folder never mixes two specs."""
        if self.exists():
            saved = self.read_spec()
            differs = _first_difference(_comparable(saved), _comparable(spec))
            if differs is not None:
                key, old, new = differs
                raise BabysitterError(
                    f"study folder {str(self.path)!r} holds a study with {key}={old!r}, now "
                    f"{key}={new!r}; resume it with `babysit resume {self.path}` or pass another "
                    "--study-dir"
                )
        keep_copies(code or {}, self.code)
        if self.exists() and target.order <= self.read_state().target.order:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.spec_file, spec.to_yaml())
        self.update_state(target=target)

    def resolve(self, spec: StudySpec) -> StudySpec:
        """``spec`` with ``lr: auto`` replaced by the range this study's lr probe proposed
        (unchanged while there is none)."""
        sanity = self.read_sanity()
        if not spec.lr_auto or sanity is None or not sanity.lr_range:
            return spec
        return spec.with_lr_range(*sanity.lr_range)

    def check(self) -> None:
        """Read every record the folder holds, so a damaged one stops a command before any
        data is decoded or trial started."""
        if not self.exists():
            return
        self.read_state()
        self.read_sanity()
        for number in range(1, len(self.rounds_done()) + 2):
            self.read_stage(round_stage(number))
            if number > 1:
                self.read_narrowing(round_stage(number))
        if self.read_final() is not None:
            self._check_checkpoint(self.final / "checkpoint.pt")
        self.read_summary()

    def _check_checkpoint(self, path: Path) -> None:
        """A torch checkpoint is a zip file whose directory sits at its end: a cut or
        overwritten one fails here, in one line, not in torch.load at the report."""
        if path.exists() and not zipfile.is_zipfile(path):
            raise BabysitterError(
                f"{path}: damaged (cut short or overwritten; not a torch checkpoint); delete "
                f"{path.parent} and `babysit resume {self.path}` trains the final model again"
            )

    # the steps' records

    def finished(self) -> list[str]:
        """The steps whose record is complete in the folder, in order (search rounds by their
        stage names: coarse, fine, fine2, ...)."""
        done: list[str] = [Step.SANITY] if self.sanity_file.exists() else []
        done += self.rounds_done()
        if (self.final / "result.json").exists():
            done.append(Step.FINAL)
        return done

    def rounds_done(self) -> list[str]:
        """The search rounds whose results are in the folder, in order."""
        done, number = [], 1
        while self.stage_done(round_stage(number)):
            done.append(round_stage(number))
            number += 1
        return done

    def needs_search(self, target: Step, spec: StudySpec) -> bool:
        """Whether a search round up to ``target`` may still have to run (and so needs Ray):
        not when the final model is trained, or the rounds reached their cap or stopped."""
        if target == Step.SANITY or Step.FINAL in self.finished():
            return False
        done = self.rounds_done()
        if target == Step.COARSE:
            return not done
        if len(done) >= spec.round_cap:
            return False
        last = self.read_narrowing(round_stage(len(done) + 1)) if done else None
        return last is None or not last.stop

    def read_sanity(self) -> SanityRecord | None:
        if not self.sanity_file.exists():
            return None
        return _read(self.sanity_file, "delete it to run the checks again", SanityRecord.from_dict)

    def write_sanity(self, record: SanityRecord) -> None:
        _write_json(self.sanity_file, record.to_dict())

    def stage_done(self, stage: str) -> bool:
        return self.stage_files(stage)[0].exists()

    def read_stage(self, stage: str) -> StageTables | None:
        trials, epochs = self.stage_files(stage)
        if not trials.exists():
            return None
        fix = (
            f"delete {trials.name} and {epochs.name} to rebuild them from ray/{stage} (the "
            "stage runs again where that is gone)"
        )
        return StageTables(
            _read(trials, fix, pd.read_parquet, parse=False),
            _read(epochs, fix, pd.read_parquet, parse=False),
        )

    def write_stage(self, stage: str, tables: StageTables) -> None:
        """Refuses a table whose trial rows disagree with their epoch rows: a table is read
        back as the truth by every later step, narrowing first."""
        problem = disagreement(tables)
        if problem is not None:
            raise BabysitterError(
                f"the {stage} stage's table disagrees with its epoch rows, {problem}; it is not "
                f"written: `babysit resume {self.path}` tries the stage again (if this comes "
                f"back, delete {self.ray / stage} and the stage runs anew)"
            )
        self.results.mkdir(parents=True, exist_ok=True)
        for frame, path in zip(
            (tables.trials, tables.epochs), self.stage_files(stage), strict=True
        ):
            with replacing(path) as tmp:
                frame.to_parquet(tmp, index=False)

    def read_narrowing(self, into: str = Step.FINE) -> NarrowingRecord | None:
        path = self.narrowing_file_for(into)
        if not path.exists():
            return None
        fix = "delete it to narrow again from the previous round's results"
        return _read(path, fix, NarrowingRecord.from_dict)

    def write_narrowing(self, record: NarrowingRecord) -> None:
        _write_json(self.narrowing_file_for(record.into), record.to_dict())

    def stage_space(self, spec: StudySpec, stage: str) -> dict[str, Param]:
        """The space a stage searched: the spec's for coarse, the narrowed one after."""
        narrowing = self.read_narrowing(stage) if stage != Step.COARSE else None
        if narrowing is not None:
            return narrowing.space()
        return self.resolve(spec).space()

    def read_final(self) -> FinalRecord | None:
        """The final run, once it has ended (``result.json`` is its last file)."""
        result_file = self.final / "result.json"
        if not result_file.exists():
            return None
        fix = f"delete {self.final} to train the final model again"
        outcome = _read(result_file, fix, dict)
        config = _read(self.final / "config.json", fix, dict)
        metrics = self.final / "metrics.jsonl"
        epochs = [_epoch_row(json.loads(line)) for line in metrics.read_text().splitlines() if line]
        test_file = self.final / "test_metrics.json"
        test = None
        if test_file.exists():
            test = _read(test_file, fix, lambda raw: ClassificationReport(**raw))
        return FinalRecord(config, outcome["status"], epochs, outcome.get("reason", ""), test)

    def read_summary(self) -> Summary | None:
        if not self.summary_file.exists():
            return None
        return _read(
            self.summary_file, "delete it: `babysit resume` writes it again", Summary.from_dict
        )

    def write_summary(self, summary: Summary) -> None:
        write_text(self.summary_file, json.dumps(summary.to_dict(), indent=2, default=str) + "\n")


def _read(path: Path, fix: str, make: Callable[[Any], T], *, parse: bool = True) -> T:
    """``make`` applied to the file's JSON (or to its path when not ``parse``); a damaged or
    half-written file is one line naming it and ``fix``."""
    if parse and not path.exists():
        return make({})
    try:
        return make(json.loads(path.read_text()) if parse else path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BabysitterError(
            f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:80]}); {fix}"
        ) from None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def _epoch_row(row: dict[str, Any]) -> dict[str, Any]:
    """A final run's epoch row; one written before the metric names were one
    vocabulary named its trial status ``status``."""
    if "status" in row and TRIAL_STATUS not in row:
        row[TRIAL_STATUS] = row.pop("status")
    return row


def _comparable(spec: StudySpec) -> dict[str, Any]:
    return _flatten(spec.defining())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "search_space":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any] | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return key, old.get(key), new.get(key)
    return None
