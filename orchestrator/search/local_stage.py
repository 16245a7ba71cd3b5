"""The stage runner without Ray: trials one after another in this process, with ASHA's rule
applied at each rung as results arrive (what Ray's ASHA does with one trial slot). It runs the
pipeline's logic in tests and tiny studies in seconds. A stage it leaves unfinished goes on
from the trial it was running (which starts again), its rungs and finished trials kept in the
stage's folder in the study, as the Ray runner keeps them.

With ``fuse`` K >= 2 it trains up to K consecutive trials that may fuse (``trainables.fused``) as
one group, each member still an ordinary trial to the log, the rungs and the events; trials that
cannot fuse train alone."""

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
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.epoch import EpochReport
from trainables.fused import fusion_key, why_not_fused
from trainables.fused_training import train_fused
from trainables.status import TrialStatus
from trainables.train import train

Trainable = Callable[
    ..., Any
]  # train's signature: (config, data, *, on_epoch, checkpoint_path, resume)


class LocalStageRunner:
    def __init__(
        self, trainable: Trainable = train, fuse: int = 1, fused: Callable = train_fused
    ) -> None:
        self.trainable, self.fuse, self.fused = trainable, fuse, fused

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
        trials = [TrialInfo(f"{prefix}_{i:05d}", p) for i, p in enumerate(samples(run))]
        for chunk in _chunks(trials, self.fuse):
            todo = [t for t in chunk if t.trial_id not in ends]
            configs = {t.trial_id: base.replace(**t.config) for t in todo}
            done = {
                t.trial_id: _ended(t, ends[t.trial_id], rows.get(t.trial_id, []), rungs)
                for t in chunk
                if t.trial_id in ends
            }
            for group in _groups(todo, configs):
                for trial in group:
                    events.trial_started(run.name, trial)
                if len(group) == 1:
                    trial = group[0]
                    found = [self._trial(run, trial, configs[trial.trial_id], data, events, rungs)]
                else:
                    found = self._group(
                        run, group, [configs[t.trial_id] for t in group], data, events, rungs
                    )
                for trial, record in zip(group, found, strict=True):
                    append_end(
                        run.path, trial.trial_id, Ended(record.status, record.retries, record.error)
                    )
                    events.trial_finished(run.name, trial, record.status, len(record.history))
                    done[trial.trial_id] = record
            for trial in chunk:
                records.append(done[trial.trial_id])
                scores = [s for s in map(_score, records) if s is not None]
                statuses = [r.status for r in records]
                shown = tally.update(statuses, scores, time.monotonic() - start)
                if shown is not None:
                    events.stage_progress(run.name, shown)
        events.stage_ended(run.name)
        return stage_tables(run.name, records, base.flat())

    def _trial(self, run, trial, config, data, events, rungs) -> TrialRecord:
        rows: list[dict[str, Any]] = []
        judge = _judge(run, trial, rows, events, rungs, time.monotonic())

        def on_epoch(report: EpochReport) -> None:
            if not judge(report):
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

    def _group(self, run, trials, configs, data, events, rungs) -> list[TrialRecord]:
        """Members train fused; a failed group resumes the members still training from their
        checkpoints, ``retries`` times, before they count as errored."""
        rows: list[list[dict[str, Any]]] = [[] for _ in trials]
        now = time.monotonic()
        judges = [_judge(run, t, r, events, rungs, now) for t, r in zip(trials, rows, strict=True)]
        stopped: set[int] = set()
        training = list(range(len(trials)))

        def on_epoch(j: int, report: EpochReport) -> bool:
            k = alive[j]
            keep = judges[k](report)
            if not keep:
                stopped.add(k)
            if not keep or report.status != TrialStatus.RUNNING:
                training.remove(k)
            return keep

        error, retries = "", 0
        with tempfile.TemporaryDirectory(prefix="babysitter-group-") as tmp:
            paths = [Path(tmp) / f"{k}-{CHECKPOINT_NAME}" for k in range(len(trials))]
            while True:
                alive = list(training)
                try:
                    self.fused(
                        [configs[k] for k in alive],
                        data,
                        on_epoch=on_epoch,
                        checkpoint_paths=[paths[k] for k in alive],
                        resume=retries > 0,
                    )
                except Exception as exc:  # as for one trial: its failure is every member's status
                    if retries < run.retries:
                        retries += 1
                        continue
                    error = f"{type(exc).__name__}: {exc}"[:200]
                break
        records = []
        for k, (trial, config) in enumerate(zip(trials, configs, strict=True)):
            last = rows[k][-1] if rows[k] else {}
            if k in stopped:
                status = STOPPED
            elif error and k in training:
                status = ERRORED
            else:
                status = trial_status("TERMINATED", last, config.epochs)
            stopped_at = rungs.stopping().get(trial.trial_id) if status == STOPPED else None
            records.append(
                TrialRecord(
                    trial.trial_id,
                    status,
                    trial.config,
                    history_frame(settled(rows[k])),
                    retries,
                    error if status == ERRORED else "",
                    stopped_at,
                )
            )
        return records


class _Stopped(Exception):
    pass


def _judge(run, trial, rows, events, rungs, start) -> Callable[[EpochReport], bool]:
    """Log an epoch report of ``trial`` and judge it at its rung: False when it stops there."""

    def judge(report: EpochReport) -> bool:
        row = report.row()
        row["time_total_s"] = time.monotonic() - start
        row["timestamp"] = time.time()
        rows.append(row)
        append_epoch(run.path, trial.trial_id, row, ROW_COLUMNS)
        events.trial_epoch(run.name, trial, row)
        if report.status != TrialStatus.RUNNING:
            return True
        group = run.stage.scheduler.group(trial.config)
        decision = rungs.decide(trial.trial_id, report.epoch, row.get(METRIC, 0.0), group)
        return decision is None or not decision.stopped

    return judge


def _chunks(trials: list[TrialInfo], size: int) -> Iterator[list[TrialInfo]]:
    for i in range(0, len(trials), max(1, size)):
        yield trials[i : i + max(1, size)]


def _groups(trials: list[TrialInfo], configs: dict[str, TrialConfig]) -> list[list[TrialInfo]]:
    """Trials that may train fused together, in their order; the rest one by one."""
    by_key: dict[tuple, list[TrialInfo]] = {}
    for t in trials:
        by_key.setdefault(fusion_key(configs[t.trial_id]), []).append(t)
    groups = []
    for group in by_key.values():
        if len(group) > 1 and not why_not_fused([configs[t.trial_id] for t in group]):
            groups.append(group)
        else:
            groups.extend([t] for t in group)
    return groups


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
