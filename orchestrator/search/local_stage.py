"""The stage runner without Ray: trials one after another in this process, with ASHA's rule
applied at each rung as results arrive (what Ray's ASHA does with one trial slot). It runs the
pipeline's logic in tests and tiny studies in seconds. A stage it leaves unfinished starts again
from its first trial."""

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
from orchestrator.search.results import (
    ERRORED,
    STOPPED,
    StageTables,
    TrialRecord,
    history_frame,
    stage_tables,
    trial_status,
)
from orchestrator.search.rungs import rungs_of
from orchestrator.search.stage import StageRun, Tally
from orchestrator.study.observer import StudyObserver, TrialInfo
from trainables.checkpoint import CHECKPOINT_NAME
from trainables.datasets import DataSplits
from trainables.status import TrialStatus
from trainables.train import EpochReport, train

Trainable = Callable[
    ..., Any
]  # train's signature: (config, data, *, on_epoch, checkpoint_path, resume)


class LocalStageRunner:
    def __init__(self, trainable: Trainable = train) -> None:
        self.trainable = trainable

    def run(self, run: StageRun, data: DataSplits, events: StudyObserver) -> StageTables:
        base = run.trial_base()
        rungs = rungs_of(run)
        prefix = f"{zlib.crc32(str(run.path).encode()) & 0xFFFFF:05x}"
        tally, start = Tally(run.trial_count), time.monotonic()
        records: list[TrialRecord] = []
        for i, params in enumerate(samples(run)):
            trial = TrialInfo(f"{prefix}_{i:05d}", params)
            events.trial_started(run.name, trial)
            record = self._trial(run, trial, base.replace(**params), data, events, rungs)
            records.append(record)
            events.trial_finished(run.name, trial, record.status, len(record.history))
            scores = [s for s in map(_score, records) if s is not None]
            statuses = [r.status for r in records]
            shown = tally.update(statuses, scores, time.monotonic() - start)
            if shown is not None:
                events.stage_progress(run.name, shown)
        events.stage_ended(run.name)
        return stage_tables(run.name, records, base.to_dict())

    def _trial(self, run, trial, config, data, events, rungs) -> TrialRecord:
        rows: list[dict[str, Any]] = []
        start = time.monotonic()

        def on_epoch(report: EpochReport) -> None:
            row = {**report.metrics, "trial_status": report.status}
            row["time_total_s"] = time.monotonic() - start
            row["timestamp"] = time.time()
            rows.append(row)
            events.trial_epoch(run.name, trial, row)
            if report.status != TrialStatus.RUNNING:
                return
            decision = rungs.decide(trial.trial_id, report.epoch, row.get(METRIC, 0.0))
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
        return TrialRecord(
            trial.trial_id, status, trial.config, history_frame(rows), retries, error, stopped_at
        )


class _Stopped(Exception):
    pass


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
