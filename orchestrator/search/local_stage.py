"""The stage runner without Ray: trials one after another in this process, with ASHA's rule
applied at each rung as results arrive (what Ray's ASHA does with one trial slot). It runs the
pipeline's logic in tests and tiny studies in seconds. A stage it leaves unfinished goes on
from the trial it was running (which starts again), its rungs and finished trials kept in the
stage's folder in the study, as the Ray runner keeps them.

With ``resources.fuse`` K >= 2 it trains trials that may fuse (``trainables.fused``) K to a group,
each member still an ordinary trial to the log, the rungs and the events; trials that cannot fuse
train alone. ``fuse: auto`` is off here: this runner serves tests and tiny studies on a CPU."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.names import METRIC
from orchestrator.search.epoch_log import Ended, append_end, read_log, settled
from orchestrator.search.events import StageEvents
from orchestrator.search.groups import fused_groups, plan_fusion, stage_trials
from orchestrator.search.judging import ended_record, epoch_judge
from orchestrator.search.results import (
    ERRORED,
    STOPPED,
    StageTables,
    TrialRecord,
    history_frame,
    stage_tables,
    trial_status,
)
from orchestrator.search.rungs import DECISIONS_FILE, rungs_of
from orchestrator.search.stage import StageRun, Tally
from trainables.checkpoint import CHECKPOINT_NAME
from trainables.datasets import DataSplits
from trainables.epoch import EpochReport
from trainables.fused_training import train_fused
from trainables.status import TrialStatus
from trainables.train import train

Trainable = Callable[
    ..., Any
]  # train's signature: (config, data, *, on_epoch, checkpoint_path, resume)


class LocalStageRunner:
    def __init__(self, trainable: Trainable = train, fused: Callable = train_fused) -> None:
        self.trainable, self.fused = trainable, fused

    def run(self, run: StageRun, data: DataSplits, events: StageEvents) -> StageTables:
        base = run.trial_base()
        run.path.mkdir(parents=True, exist_ok=True)
        rungs = rungs_of(run.stage, run.path / DECISIONS_FILE)
        rows, ends = read_log(run.path)
        if ends:
            events.stage_resumed(run.name, run.path)
        trials = stage_trials(run, [*rows, *ends])
        configs = {t.trial_id: base.replace(**t.config) for t in trials}
        fusion = plan_fusion(run, list(configs.values()), knee=None)
        if fusion.line:
            events.stage_fused(run.name, fusion.line)
        tally, start = Tally(run.trial_count), time.monotonic()
        done: dict[str, TrialRecord] = {}
        for group in fused_groups(trials, configs, fusion.size):
            todo = [t for t in group if t.trial_id not in ends]
            for trial in group:
                if trial.trial_id in ends:
                    ended = ends[trial.trial_id]
                    done[trial.trial_id] = ended_record(
                        trial, ended, rows.get(trial.trial_id, []), rungs
                    )
            for trial in todo:
                events.trial_started(run.name, trial)
            found = self._train(run, todo, [configs[t.trial_id] for t in todo], data, events, rungs)
            for trial, record in zip(todo, found, strict=True):
                append_end(
                    run.path, trial.trial_id, Ended(record.status, record.retries, record.error)
                )
                events.trial_finished(run.name, trial, record.status, len(record.history))
                done[trial.trial_id] = record
            scores = [s for s in map(_score, done.values()) if s is not None]
            shown = tally.update(
                [r.status for r in done.values()], scores, time.monotonic() - start
            )
            if shown is not None:
                events.stage_progress(run.name, shown)
        events.stage_ended(run.name)
        records = [done[t.trial_id] for t in trials]
        return stage_tables(run.name, records, base.flat())

    def _train(self, run, trials, configs, data, events, rungs) -> list[TrialRecord]:
        if len(trials) == 1:
            return [self._trial(run, trials[0], configs[0], data, events, rungs)]
        return self._group(run, trials, configs, data, events, rungs) if trials else []

    def _trial(self, run, trial, config, data, events, rungs) -> TrialRecord:
        rows: list[dict[str, Any]] = []
        judge = epoch_judge(run, trial, rows, events, rungs, time.monotonic())

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
        judges = [
            epoch_judge(run, t, r, events, rungs, now) for t, r in zip(trials, rows, strict=True)
        ]
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
                        order_seed=configs[0].seed,
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


def _score(record: TrialRecord) -> float | None:
    if METRIC not in record.history or record.history[METRIC].isna().iloc[-1]:
        return None
    return float(record.history[METRIC].iloc[-1])
