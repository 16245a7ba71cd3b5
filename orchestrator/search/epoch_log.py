"""Each trial's reported epochs, appended by the driver as they arrive, in the stage's folder in
the study: where a stage's epoch rows come from. Not Tune's ``result.json``: Tune writes that in
its staging folder inside the Ray session and copies it into the study, and after a resume (a
new session) the copy began again (seen: a trial recorded with 0 epochs whose progress.csv had
epoch 1, another with 3 epochs and 2 rows). The in-process runner also writes how each trial
ended, so an interrupted stage goes on after its last finished trial."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.metric_names import per_layer_or_fold

EPOCHS_FILE = "epochs.jsonl"


@dataclass(frozen=True)
class Ended:
    """How a trial of the in-process runner ended."""

    status: str
    retries: int = 0
    error: str = ""


def append_epoch(stage: Path, trial_id: str, result: Mapping[str, Any], columns: tuple) -> None:
    """One reported epoch of ``trial_id``: the ``columns`` the tables keep, and the per-layer
    and per-fold ones."""
    row = {k: _plain(v) for k, v in result.items() if k in columns or per_layer_or_fold(k)}
    if "epoch" in row:
        _append(stage, {"trial_id": trial_id, "row": row})


def append_end(stage: Path, trial_id: str, ended: Ended) -> None:
    _append(stage, {"trial_id": trial_id, "ended": ended.__dict__})


def read_log(stage: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Ended]]:
    """Every trial's rows in the order they came, and how the in-process runner's trials
    ended. A line cut short by a killed driver is skipped."""
    rows: dict[str, list[dict[str, Any]]] = {}
    ends: dict[str, Ended] = {}
    path = stage / EPOCHS_FILE
    if not path.exists():
        return rows, ends
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            trial = entry["trial_id"]
            if "row" in entry:
                rows.setdefault(trial, []).append(entry["row"])
            else:
                ends[trial] = Ended(**entry["ended"])
        except (ValueError, TypeError, KeyError):
            continue
    return rows, ends


def settled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs a trial ended with: the last report of each epoch up to the one it reported
    last (a trial restored from an earlier checkpoint ran the later epochs again, and one that
    began again from scratch may end before them)."""
    if not rows:
        return []
    last = int(rows[-1]["epoch"])
    latest = {int(row["epoch"]): row for row in rows}
    return [latest[e] for e in sorted(latest) if e <= last]


def _append(stage: Path, entry: dict[str, Any]) -> None:
    stage.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry).encode() + b"\n"
    with (stage / EPOCHS_FILE).open("ab+") as log:
        end = log.seek(0, 2)
        if end:  # a line cut short by a killed driver: start a new one
            log.seek(end - 1)
            if log.read(1) != b"\n":
                line = b"\n" + line
        log.write(line)


def _plain(value: Any) -> Any:
    """A JSON value (json writes NaN and Infinity and reads them back)."""
    if hasattr(value, "item"):
        value = value.item()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
