"""The stage runner without Ray: trials one after another in this process, with ASHA's rule
applied at each rung as results arrive (what Ray's ASHA does with one trial slot). It runs the
pipeline's logic in tests and tiny studies in seconds. A stage it leaves unfinished goes on
from the trial it was running (which starts again), its rungs and finished trials kept in the
stage's folder in the study, as the Ray runner keeps them."""

from __future__ import annotations

import itertools
import random
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.names import METRIC
from orchestrator.search.epoch_log import Ended, append_end, append_epoch, read_log, settled
from orchestrator.search.events import StageEvents, TrialInfo
from orchestrator.search.results import (
    ERRORED,
    ROW_COLUMNS,
    STOPPED,
    StageTables,
    TrialRecord,
    history_frame,
    stage_tables,
    trial_status,
)
from orchestrator.search.rungs import DECISIONS_FILE, Rungs, rungs_of
from orchestrator.search.stage import StageRun, Tally
from trainables.checkpoint import CHECKPOINT_NAME
from trainables.datasets import DataSplits
from trainables.epoch import EpochReport
from trainables.status import TrialStatus
from trainables.train import train

Trainable = Callable[
    ..., Any
]  # train's signature: (config, data, *, on_epoch, checkpoint_path, resume)


class LocalStageRunner:
    def __init__(self, trainable: Trainable = train) -> None:
        self.trainable = trainable

    def run(self, run: StageRun, data: DataSplits, events: StageEvents) -> StageTables:
        base = run.trial_base()
        run.path.mkdir(parents=True, exist_ok=True)
        rungs = rungs_of(run.stage, run.path / DECISIONS_FILE)
        rows, ends = read_log(run.path)
        if ends:
            events.stage_resumed(run.name, run.path)
        prefix = _prefix(run, [*rows, *ends])
        tally, start = Tally(run.trial_count), time.monotonic()
        records: list[TrialRecord] = []
        for i, params in enumerate(samples(run)):
            trial = TrialInfo(f"{prefix}_{i:05d}", params)
            ended = ends.get(trial.trial_id)
            if ended is not None:
                record = _ended(trial, ended, rows.get(trial.trial_id, []), rungs)
            else:
                events.trial_started(run.name, trial)
                record = self._trial(run, trial, base.replace(**params), data, events, rungs)
                append_end(
                    run.path, trial.trial_id, Ended(record.status, record.retries, record.error)
                )
                events.trial_finished(run.name, trial, record.status, len(record.history))
            records.append(record)
            scores = [s for s in map(_score, records) if s is not None]
            statuses = [r.status for r in records]
            shown = tally.update(statuses, scores, time.monotonic() - start)
            if shown is not None:
                events.stage_progress(run.name, shown)
        events.stage_ended(run.name)
        return stage_tables(run.name, records, base.flat())

    def _trial(self, run, trial, config, data, events, rungs) -> TrialRecord:
        rows: list[dict[str, Any]] = []
        start = time.monotonic()

        def on_epoch(report: EpochReport) -> None:
            row = report.row()
            row["time_total_s"] = time.monotonic() - start
            row["timestamp"] = time.time()
            rows.append(row)
            append_epoch(run.path, trial.trial_id, row, ROW_COLUMNS)
            events.trial_epoch(run.name, trial, row)
            if report.status != TrialStatus.RUNNING:
                return
            group = run.stage.scheduler.group(trial.config)
            decision = rungs.decide(trial.trial_id, report.epoch, row.get(METRIC, 0.0), group)
            if decision is not None and decision.stopped:
                raise _Stopped

        error, retries = "", 0
        with tempfile.TemporaryDirectory(prefix="babysitter-trial-") as tmp:
            checkpoint = Path(tmp) / CHECKPOINT_NAME
            while True:
                try:
                    self.trainable(
                        config,
                        data,
                        on_epoch=on_epoch,
                        checkpoint_path=checkpoint,
                        resume=retries > 0,
                    )
                    status = trial_status("TERMINATED", rows[-1] if rows else {}, config.epochs)
                except _Stopped:
                    status = STOPPED
                except Exception as exc:  # a trial's failure is its status, as on Ray
                    if retries < run.retries:
                        retries += 1
                        continue
                    status, error = ERRORED, f"{type(exc).__name__}: {exc}"[:200]
                break
        stopped_at = rungs.stopping().get(trial.trial_id) if status == STOPPED else None
        history = history_frame(settled(rows))
        return TrialRecord(
            trial.trial_id, status, trial.config, history, retries, error, stopped_at
        )


class _Stopped(Exception):
    pass


def _ended(trial: TrialInfo, ended: Ended, rows: list[dict], rungs: Rungs) -> TrialRecord:
    """A trial that finished before the stage was interrupted, as the stage's log keeps it."""
    stopped_at = rungs.stopping().get(trial.trial_id) if ended.status == STOPPED else None
    history = history_frame(settled(rows))
    return TrialRecord(
        trial.trial_id, ended.status, trial.config, history, ended.retries, ended.error, stopped_at
    )


def _prefix(run: StageRun, logged: list[str]) -> str:
    """The stage's trial id prefix: the one its log already uses (the study folder may have
    moved since), or one from its folder's path."""
    for trial_id in logged:
        return trial_id.rsplit("_", 1)[0]
    return f"{zlib.crc32(str(run.path).encode()) & 0xFFFFF:05x}"


def samples(run: StageRun) -> Iterator[dict[str, Any]]:
    """The stage's trial settings: ``trials`` random draws (seeded by the stage), each
    crossed with every combination of the grid parameters."""
    rng = random.Random(run.seed)
    grid = {n: p.values for n, p in run.space.items() if p.kind == "grid"}
    for _ in range(run.stage.trials):
        for values in itertools.product(*grid.values()):
            drawn = {n: p.sample(rng) for n, p in run.space.items() if p.kind != "grid"}
            yield {**dict(zip(grid, values, strict=True)), **drawn}


def _score(record: TrialRecord) -> float | None:
    if METRIC not in record.history or record.history[METRIC].isna().iloc[-1]:
        return None
    return float(record.history[METRIC].iloc[-1])
