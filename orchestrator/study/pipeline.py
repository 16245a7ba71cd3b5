"""A study's steps: sanity checks -> coarse stage -> narrowing -> fine stage -> final training
-> test, all in one study folder, each step skipped when its record is already there (which is
how resume works). Whoever watches (console, MLflow) is told through the observer hooks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.names import METRIC, Step, round_number, round_stage
from orchestrator.run_folder import RunFolder, train_run
from orchestrator.search.checkpoints import prune
from orchestrator.search.ranking import rank
from orchestrator.search.space import Param
from orchestrator.search.stage import StageRun, StageRunner
from orchestrator.study.candidates import choose, score_candidates
from orchestrator.study.folder import StudyFolder
from orchestrator.study.narrowing_decision import (
    PENALTY_LIMIT,
    decide_narrowing,
    narrowing_limits,
    nothing_usable,
)
from orchestrator.study.observer import Observers, StudyObserver, StudyStarted
from orchestrator.study.plan import plan_study
from orchestrator.study.records import (
    BestTrial,
    FinalRecord,
    FinalSummary,
    NarrowingRecord,
    SanitySummary,
    Summary,
)
from orchestrator.study.room import check_room, out_of_room, stop_stage
from orchestrator.study.sanity_step import run_sanity
from orchestrator.study.spec import StudySpec
from trainables.config import TrialConfig
from trainables.cross_validation import merged
from trainables.datasets import DataSplits, Split
from trainables.errors import BabysitterError
from trainables.status import FINISHED

LR_COVERAGE = 0.5  # warn when the lr range covers less of the probe's learning range


class Study:
    """One study folder, its spec and data, run to a target by a stage runner."""

    def __init__(
        self,
        folder: StudyFolder,
        spec: StudySpec,
        data: DataSplits,
        runner: StageRunner,
        observers: Sequence[StudyObserver] = (),
        *,
        skip_sanity: bool = False,
    ) -> None:
        self.folder, self.spec, self.data, self.runner = folder, spec, data, runner
        self.events = Observers(observers)
        self.skip_sanity = skip_sanity
        self.plan = plan_study(spec, len(data.train), len(data.val))

    def run(self, target: Step = Step.FINAL) -> Summary:
        """Every step up to ``target`` that has not finished yet; returns the summary."""
        self.events.study_started(StudyStarted(self.spec, self.plan, self.folder.path, self.data))
        try:
            summary = self._steps(target)
        except Exception as exc:
            self.events.study_failed(exc)
            raise
        self.events.study_finished(summary)
        return summary

    def _steps(self, target: Step) -> Summary:
        summary = Summary(self.spec.name, self.spec.budget)
        spec = self._sanity(shown=target == Step.SANITY)
        sanity = self.folder.read_sanity()
        if sanity is not None:
            lr_range = list(sanity.lr_range) if sanity.lr_range else None
            summary = _with(summary, sanity=SanitySummary(sanity.passed, lr_range))
        if target == Step.SANITY:
            return summary
        stage, trials, space, summary = self._search(spec, summary, target)
        if target in (Step.COARSE, Step.FINE):
            return summary
        row, candidates = self._choose(spec, stage, trials, space)
        chosen = _config_of(row, spec, space).replace(epochs=self.plan.final_epochs)
        record = self._final(chosen, list(space))
        test = record.test.accuracy if record.test is not None else None
        final = FinalSummary(stage, record.status, record.config, test, candidates)
        summary = _with(summary, final=final)
        self.folder.write_summary(summary)
        return summary

    def _search(
        self, spec: StudySpec, summary: Summary, target: Step
    ) -> tuple[str, pd.DataFrame, dict[str, Param], Summary]:
        """The coarse round, then fine rounds until the spec's count or the rounds settle;
        returns the last round's name, trials and space, and the summary with each best."""
        stage, space = Step.COARSE, self._capped(spec.space(), spec)
        trials = self._stage(spec, stage, space)
        summary = _with(summary, coarse=_best_row(trials, space))
        later: dict[str, BestTrial] = {}
        while target != Step.COARSE and round_number(stage) < spec.round_cap:
            record = self._narrowing(spec, stage, trials, space)
            if record.stop:
                break
            stage, space = record.into, record.space()
            trials = self._stage(spec, stage, space)
            best = _best_row(trials, space)
            if stage == Step.FINE:
                summary = _with(summary, fine=best)
            elif best is not None:  # a round with no usable trial has no best to name
                later[stage] = best
                summary = _with(summary, rounds=dict(later))
        return stage, trials, space, summary

    def _choose(
        self, spec: StudySpec, stage: str, trials: pd.DataFrame, space: dict[str, Param]
    ) -> tuple[pd.Series, dict[str, dict[str, float]] | None]:
        """The best trial of the last round (by the mean over seeds of the top candidates
        when ``final.candidates`` x ``final.seeds`` > 1) and those candidates' scores."""
        best = rank(trials)
        if best.empty:
            raise BabysitterError(nothing_usable(stage, trials))
        if not spec.final.retrains:
            return best.iloc[0], None
        table = self._candidates(spec, stage, best, space)
        candidates = {
            str(t): {"mean": float(r["mean"]), "spread": float(r["spread"])}
            for t, r in table.iterrows()
        }
        row = best[best["trial_id"] == table.index[0]].iloc[0]
        return row, candidates

    def _check_lr_range(self, spec: StudySpec) -> None:
        """Warn when the searched lr range misses most of where the lr probe saw learning
        (the seed report's [1e-6, 1e-3] against the probe's [1e-4, 1e-1] on faces)."""
        record = self.folder.read_sanity()
        lr = spec.search_space.get("lr")
        if record is None or record.lr_range is None or spec.lr_auto or lr is None:
            return
        param = spec.space()["lr"]
        if not param.numeric:
            return
        share = param.range().coverage(*record.lr_range)
        if share < LR_COVERAGE:
            self.events.lr_range_missed(param, record.lr_range, share)

    def _sanity(self, shown: bool) -> StudySpec:
        """The sanity checks before the coarse stage (once: a resumed study keeps its result;
        ``shown`` shows it again); returns the spec with ``lr: auto`` resolved."""
        folder, spec = self.folder, self.spec
        if folder.stage_done(Step.COARSE) and not shown:
            pass
        elif self.skip_sanity:
            self.events.sanity_skipped()
        else:
            check_room(folder.path)
            record = run_sanity(folder, spec, self.data, self.events)
            self.events.step_finished(Step.SANITY)
            if not record.passed:
                failed = ", ".join(c.name for c in record.report.checks if c.failed)
                raise BabysitterError(
                    f"sanity checks failed: {failed} (see above and {folder.sanity_file}); fix "
                    "the setup, or pass --skip-sanity to search anyway"
                )
        resolved = folder.resolve(spec)
        if not folder.stage_done(Step.COARSE):
            self._check_lr_range(resolved)
        if spec.lr_auto:
            if resolved.lr_auto:
                raise BabysitterError(
                    "search_space.lr is auto, and this study has no lr range from the sanity "
                    "checks' lr probe; drop --skip-sanity, or give lr a range in the spec"
                )
            self.events.lr_resolved(resolved.space()["lr"])
        return resolved

    def _stage(self, spec: StudySpec, name: str, space: dict[str, Param]) -> pd.DataFrame:
        tables = self.folder.read_stage(name)
        if tables is None:
            base = spec.base_config().replace(cv_folds=self.plan.folds)
            run = StageRun(
                name,
                self.plan.stage(name),
                space,
                base,
                spec.resources,
                spec.retries,
                self.folder.ray,
                seed=base.seed + round_number(name) - 1,
            )
            check_room(self.folder.path)
            self.events.stage_started(run)
            try:
                tables = self.runner.run(run, without_test(self.data), self.events)
            except Exception as exc:
                if out_of_room(self.folder.path, exc):
                    stop_stage(run.path, self.folder.path)
                raise
            errors = [e for e in tables.trials.get("error", pd.Series(dtype=str)).fillna("") if e]
            if errors and out_of_room(self.folder.path, *errors):
                stop_stage(run.path, self.folder.path)
            _check_ended(name, tables.trials, self.folder.path)
            self.folder.write_stage(name, tables)
            best = rank(tables.trials).head(max(spec.final.candidates, 1))["trial_id"]
            prune(run.path, set(best))
            self.events.step_finished(name)
        path = self.folder.stage_files(name)[0]
        self.events.stage_results(name, tables.trials, list(space), spec.narrowing.top_k, path)
        return tables.trials

    def _narrowing(
        self, spec: StudySpec, source: str, trials: pd.DataFrame, space: dict[str, Param]
    ) -> NarrowingRecord:
        """The next round's space from round ``source``'s trials (decided once, kept)."""
        into = round_stage(round_number(source) + 1)
        record = self.folder.read_narrowing(into)
        if record is None:
            limits = narrowing_limits(spec, self.folder.read_sanity(), self.data)
            stage = self.folder.read_stage(source)
            epochs = stage.epochs if stage is not None else None
            record = decide_narrowing(spec, trials, limits, source, space, epochs)
            self.folder.write_narrowing(record)
        self.events.narrowing_decided(record)
        return record

    def _candidates(
        self, spec: StudySpec, stage: str, best: pd.DataFrame, space: dict[str, Param]
    ) -> pd.DataFrame:
        """The top ``final.candidates`` of round ``stage`` retrained with ``final.seeds``
        seeds each, for that round's epochs, scored as its trials were; best mean first."""
        epochs = self.plan.stage(stage).epochs
        configs = {
            str(row["trial_id"]): _config_of(row, spec, space).replace(
                cv_folds=self.plan.folds, epochs=epochs
            )
            for _, row in best.head(spec.final.candidates).iterrows()
        }
        self.events.candidates_started(len(configs), spec.final.seeds, epochs)
        path = self.folder.candidates_file
        runs = score_candidates(configs, spec.final.seeds, without_test(self.data), path)
        table = choose(runs)
        self.events.candidates_scored(table, path)
        return table

    def _capped(self, space: dict[str, Param], spec: StudySpec) -> dict[str, Param]:
        """The coarse space with l2 kept below where its penalty swamps the data loss (the
        sanity checks' regularization check): a trial up there learns one class, whatever
        its lr, and spends a coarse slot teaching nothing."""
        l2 = space.get("l2")
        if l2 is None or not l2.numeric:
            return space
        limit = narrowing_limits(spec, self.folder.read_sanity(), self.data)["l2"]
        old = l2.range()
        if old.low >= limit.high:
            raise BabysitterError(
                f"search_space.l2={l2.to_spec()} starts at or above {limit.high:.3g}, where the "
                f"initial L2 penalty exceeds {PENALTY_LIMIT:g} x ln C (the penalty, not the "
                f"data, would drive every trial); give l2 a range that starts below "
                f"{limit.high:.3g}"
            )
        if old.high <= limit.high:
            return space
        capped = l2.with_range(dataclasses.replace(old, high=limit.high))
        self.events.range_capped(l2, capped, limit.why)
        return {**space, "l2": capped}

    def _final(self, config: TrialConfig, searched: list[str]) -> FinalRecord:
        """The chosen config trained once more: on train + val when the trials
        cross-validated (no validation split is left), on train otherwise; then tested."""
        folder = self.folder
        data = merged(self.data) if self.plan.folds else self.data
        if Step.FINAL in folder.finished():
            self.events.final_started(config, reused=folder.final)
        else:
            check_room(folder.path)
            self.events.final_started(config, reused=None)
            run = RunFolder.open(folder.final, resume=True)
            np.save(folder.input_example, input_example(data))
            train_run(run, config, data, on_epoch=lambda r: self.events.final_epoch(config, r))
        record = folder.read_final()
        self.events.final_result(record, searched)
        self.events.step_finished(Step.FINAL)
        return record


def without_test(data: DataSplits) -> DataSplits:
    """``data`` with an empty test split: what the search sees, so that no trial can touch
    the images the final report is scored on."""
    empty = Split(data.test.images[:0], data.test.labels[:0])
    return dataclasses.replace(data, test=empty)


def input_example(data: DataSplits) -> np.ndarray:
    """Two normalized test images: what the logged model takes as input."""
    shape = (1, data.channels, 1, 1)
    image = data.test.images[:2].astype(np.float32)
    mean = np.asarray(data.mean, np.float32).reshape(shape)
    return (image - mean) / np.asarray(data.std, np.float32).reshape(shape)


def _config_of(row: pd.Series, spec: StudySpec, space: dict[str, Param]) -> TrialConfig:
    values = {name: plain(row[name]) for name in space}
    return spec.base_config().replace(**values, threads=os.cpu_count() or 1)


def _best_row(trials: pd.DataFrame, space: dict[str, Param]) -> BestTrial | None:
    best = rank(trials)
    if best.empty:
        return None
    row = best.iloc[0]
    params = {name: plain(row[name]) for name in space}
    return BestTrial(row["trial_id"], float(row[METRIC]), float(row["score_se"]), params)


def _with(summary: Summary, **changes: Any) -> Summary:
    return dataclasses.replace(summary, **changes)


def plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _check_ended(stage: str, trials: pd.DataFrame, study: Path) -> None:
    """A stage's table is written once every trial has ended: one with trials still pending
    or running (the runner was stopped under it) would be narrowed from as if complete."""
    open_ = trials[~trials["status"].isin(FINISHED)] if len(trials) else trials
    if len(open_):
        counts = ", ".join(f"{n} {s}" for s, n in open_["status"].value_counts().items())
        raise BabysitterError(
            f"the {stage} stage ended with trials not finished ({counts}); its table is not "
            f"written: `babysit resume {study}` runs them"
        )
