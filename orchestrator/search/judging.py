"""What the runners do with each trial's reports, wherever the trial runs: an epoch is logged in
the stage's folder, shown to the observers and judged at its rung; an ended trial's record is
read back from the log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from orchestrator.names import METRIC
from orchestrator.search.epoch_log import Ended, append_epoch, settled
from orchestrator.search.events import StageEvents, TrialInfo
from orchestrator.search.results import ROW_COLUMNS, STOPPED, TrialRecord, history_frame
from orchestrator.search.rungs import Rungs
from orchestrator.search.stage import StageRun
from trainables.epoch import EpochReport
from trainables.status import TrialStatus


def epoch_judge(
    run: StageRun,
    trial: TrialInfo,
    rows: list[dict[str, Any]],
    events: StageEvents,
    rungs: Rungs,
    start: float,
) -> Callable[[EpochReport], bool]:
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


def ended_record(trial: TrialInfo, ended: Ended, rows: list[dict], rungs: Rungs) -> TrialRecord:
    """A trial that finished before the stage was interrupted, as the stage's log keeps it."""
    stopped_at = rungs.stopping().get(trial.trial_id) if ended.status == STOPPED else None
    history = history_frame(settled(rows))
    return TrialRecord(
        trial.trial_id, ended.status, trial.config, history, ended.retries, ended.error, stopped_at
    )
