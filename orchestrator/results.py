"""A stage's results as two pandas tables (one row per trial, one per trial-epoch), written as
Parquet; statuses are derived here so every view (progress, tables, narrowing) agrees."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

COMPLETED, STOPPED, DIVERGED, ERRORED = "completed", "stopped_by_asha", "diverged", "errored"
FINISHED = (COMPLETED, STOPPED, DIVERGED, ERRORED)
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s")


def trial_status(ray_status: str, last: Mapping[str, Any], epochs: int) -> str:
    """``completed``, ``stopped_by_asha``, ``diverged``, ``errored``, or Ray's own status
    (``running``, ``pending``, ``paused``) for a trial not finished yet."""
    if ray_status == "ERROR":
        return ERRORED
    if last.get("trial_status") == DIVERGED:
        return DIVERGED
    if last.get("epoch", 0) >= epochs:
        return COMPLETED
    if ray_status == "TERMINATED":
        return STOPPED
    return ray_status.lower()


def rank_key(status: str, val_acc: float) -> tuple[bool, float]:
    """Higher is better: a completed trial beats one ASHA stopped early (which was scored at
    an earlier epoch), then validation accuracy decides."""
    return status == COMPLETED, val_acc


def rank(trials: pd.DataFrame) -> pd.DataFrame:
    """Best first by ``rank_key``; diverged and errored trials never rank."""
    usable = trials[trials["status"].isin([COMPLETED, STOPPED])]
    keys = [rank_key(s, v) for s, v in zip(usable["status"], usable["val_acc"], strict=True)]
    order = sorted(range(len(usable)), key=lambda i: keys[i], reverse=True)
    return usable.iloc[order]


def stage_tables(
    stage: str, epochs: int, trials: Iterable[Any], base: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From Ray Tune ``Trial`` objects: the per-trial table (full config, status, final
    metrics) and the per-epoch table (one row per reported epoch, the last report wins)."""
    rows, epoch_frames = [], []
    for trial in trials:
        history = _history(trial)
        last = history.iloc[-1].to_dict() if len(history) else {}
        status = trial_status(trial.status, last, epochs)
        row = {
            "stage": stage,
            "trial_id": trial.trial_id,
            "status": status,
            "epochs_run": int(last.get("epoch", 0)),
            "retries": int(trial.run_metadata.num_failures),
            "error": _first_line(trial) if status == ERRORED else "",
            **{**base, **trial.config},
            **{m: float(last.get(m, float("nan"))) for m in METRICS},
            "best_val_acc": float(history["val_acc"].max()) if len(history) else float("nan"),
            "seconds": float(last.get("time_total_s", float("nan"))),
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
    return trials_df, epochs_df


def _history(trial: Any) -> pd.DataFrame:
    path = Path(trial.path) / "result.json"
    if not path.exists():
        return pd.DataFrame()
    frame = pd.read_json(path, lines=True)
    if "epoch" not in frame:
        return pd.DataFrame()
    keep = ["epoch", *METRICS, "epoch_seconds", "trial_status", "time_total_s", "node_ip"]
    keep.append("node_id")
    keep += sorted(c for c in frame.columns if c.startswith("update_ratio/"))
    frame = frame[[c for c in keep if c in frame.columns]].dropna(subset=["epoch"])
    frame["epoch"] = frame["epoch"].astype(int)
    if "trial_status" in frame:  # a diverged epoch was never validated (Tune was told 0.0)
        frame.loc[frame["trial_status"] == DIVERGED, "val_acc"] = float("nan")
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _first_line(trial: Any) -> str:
    error = trial.get_error()
    text = str(error) if error is not None else "failed"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("Traceback", "File "))]
    return (informative[-1] if informative else text)[:200]


def write_tables(folder: Path, stage: str, trials: pd.DataFrame, epochs: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in ((trials, f"{stage}.parquet"), (epochs, f"{stage}_epochs.parquet")):
        tmp = folder / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(folder / name)


def read_tables(folder: Path, stage: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    trials = folder / f"{stage}.parquet"
    if not trials.exists():
        return None
    return pd.read_parquet(trials), pd.read_parquet(folder / f"{stage}_epochs.parquet")
