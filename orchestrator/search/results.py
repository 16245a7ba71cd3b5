"""A stage's results as two pandas tables (one row per trial, one per trial-epoch); statuses are
derived here (the ranking in ranking.py) so every view (progress, tables, narrowing) agrees."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from orchestrator.names import METRIC
from orchestrator.search.rungs import COLUMNS as RUNG_COLUMNS
from orchestrator.search.rungs import RungDecision
from trainables.metric_names import (
    EPOCH,
    EPOCH_SECONDS,
    JUDGED,
    MEASURED,
    TRIAL_STATUS,
    per_layer_or_fold,
)
from trainables.status import TrialStatus

COMPLETED, STOPPED = TrialStatus.COMPLETED, TrialStatus.STOPPED
DIVERGED, ERRORED = TrialStatus.DIVERGED, TrialStatus.ERRORED
EPOCH_COLUMNS = (EPOCH, *MEASURED, *JUDGED, EPOCH_SECONDS, TRIAL_STATUS, "time_total_s")
EPOCH_COLUMNS += ("timestamp", "node_ip")  # timestamp: when the epoch was reported (Unix s)
ROW_COLUMNS = (*EPOCH_COLUMNS, "node_id")  # and per-layer and per-fold columns


@dataclass(frozen=True)
class StageTables:
    """A stage's results: a row per trial and a row per trial and epoch."""

    trials: pd.DataFrame
    epochs: pd.DataFrame


@dataclass(frozen=True)
class TrialRecord:
    """One trial as any stage runner ends it: status, sampled settings, reported epochs."""

    trial_id: str
    status: str
    config: Mapping[str, Any]
    history: pd.DataFrame
    retries: int = 0
    error: str = ""
    stopped_at: RungDecision | None = None  # the rung decision that stopped it


def trial_status(runner_status: str, last: Mapping[str, Any], epochs: int) -> str:
    """``completed``, ``stopped_by_asha``, ``diverged``, ``errored``, or the runner's own
    status (``running``, ``pending``, ``paused``) for a trial not finished yet."""
    if runner_status == "ERROR":
        return ERRORED
    if last.get(TRIAL_STATUS) == DIVERGED:
        return DIVERGED
    if last.get("epoch", 0) >= epochs:
        return COMPLETED
    if runner_status == "TERMINATED":
        return STOPPED
    return runner_status.lower()


def history_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Reported epochs as a table: the columns the tables keep, one row per epoch (the last
    report of an epoch wins), a diverged epoch's validation left empty."""
    frame = pd.DataFrame(list(rows))
    if "epoch" not in frame:
        return pd.DataFrame()
    keep = list(ROW_COLUMNS)
    keep += sorted(c for c in frame.columns if per_layer_or_fold(c) and c not in keep)
    frame = frame[[c for c in keep if c in frame.columns]].dropna(subset=["epoch"])
    frame["epoch"] = frame["epoch"].astype(int)
    if TRIAL_STATUS in frame:  # a diverged epoch was never validated (the scheduler got 0.0)
        frame.loc[frame[TRIAL_STATUS] == DIVERGED, METRIC] = math.nan
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def stage_tables(stage: str, trials: Iterable[TrialRecord], base: Mapping[str, Any]) -> StageTables:
    """The per-trial table (full config, status, final metrics) and the per-epoch table."""
    rows, epoch_frames = [], []
    for trial in trials:
        history = trial.history
        last = history.iloc[-1].to_dict() if len(history) else {}
        row = {
            "stage": stage,
            "trial_id": trial.trial_id,
            "status": str(trial.status),
            "epochs_run": int(last.get("epoch", 0)),
            "retries": trial.retries,
            "error": trial.error if trial.status == ERRORED else "",
            **{m: float(last.get(m, math.nan)) for m in (*MEASURED, *JUDGED)},
            **{**base, **trial.config},  # the searched lr, not the last epoch's (a schedule's)
            **(trial.stopped_at.columns() if trial.stopped_at else dict.fromkeys(RUNG_COLUMNS)),
            "best_val_acc": _best(history, METRIC, max),
            "min_val_loss": _best(history, "val_loss", min),
            "seconds": float(last.get("time_total_s", math.nan)),
            "node_ip": str(last.get("node_ip", "")),
            "node_id": str(last.get("node_id", "")),
        }
        rows.append(row)
        if len(history):
            epoch_frames.append(history.assign(stage=stage, trial_id=trial.trial_id))
    trials_df = pd.DataFrame(rows).sort_values("trial_id", kind="stable").reset_index(drop=True)
    epochs_df = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    if len(epochs_df):
        front = ["stage", "trial_id", "epoch"]
        epochs_df = epochs_df[front + [c for c in epochs_df.columns if c not in front]]
        epochs_df = epochs_df.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    return StageTables(trials_df, epochs_df)


def disagreement(tables: StageTables) -> str | None:
    """Where a trial's row disagrees with its epoch rows (its status, epochs_run and metrics
    come from them), or None: the first trial found, in words."""
    epochs = tables.epochs
    for row in tables.trials.itertuples(index=False):
        own = epochs[epochs["trial_id"] == row.trial_id] if len(epochs) else epochs
        ran = sorted(int(e) for e in own["epoch"]) if len(own) else []
        last = own.sort_values("epoch").iloc[-1] if len(own) else {}
        problem = ""
        if ran != list(range(1, len(ran) + 1)):
            problem = f"its epoch rows are epochs {ran}, not 1 to {len(ran)}"
        elif row.epochs_run != len(ran):
            problem = f"epochs_run {row.epochs_run} but {len(ran)} epoch rows"
        elif row.status == COMPLETED and row.epochs_run != row.epochs:
            problem = f"completed after {row.epochs_run} of its {row.epochs} epochs"
        elif row.status == STOPPED and not ran:
            problem = "stopped_by_asha without an epoch"
        elif ran and not _same(getattr(row, METRIC), last.get(METRIC, math.nan)):
            problem = f"{METRIC} {getattr(row, METRIC)} but its last epoch's is {last[METRIC]}"
        if problem:
            return f"trial {row.trial_id} ({row.status}): {problem}"
    return None


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _best(history: pd.DataFrame, column: str, pick) -> float:
    if column not in history or history[column].isna().all():
        return math.nan
    return float(pick(history[column].dropna()))
