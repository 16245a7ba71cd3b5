"""One training run's output folder: config.json, metrics.jsonl, checkpoint.pt, test_metrics.json.

A run folder is never overwritten silently: an existing run is continued with ``resume`` or
refused, and on resume the metrics log is cut back to the checkpoint so no epoch appears twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.checkpoint import CHECKPOINT_NAME, checkpoint_epoch
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.epoch import DIVERGED, EpochReport
from trainables.errors import BabysitterError
from trainables.evaluation import evaluate_on_test
from trainables.metrics import ClassificationReport
from trainables.train import train

METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True)
class RunFolder:
    path: Path
    start_epoch: int

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    @classmethod
    def open(cls, path: Path, *, resume: bool) -> RunFolder:
        checkpoint = path / CHECKPOINT_NAME
        if checkpoint.exists() and not resume:
            raise BabysitterError(
                f"--out {str(path)!r} already holds a run ({CHECKPOINT_NAME}); pass --resume to "
                "continue it or choose another --out"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BabysitterError(
                f"--out {str(path)!r} cannot be created ({exc.strerror}); choose a writable folder"
            ) from None
        folder = cls(path, checkpoint_epoch(checkpoint) if resume else 0)
        folder._cut_metrics(folder.start_epoch)
        return folder

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        (self.path / name).write_text(json.dumps(payload, indent=2) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line]

    def _cut_metrics(self, last_epoch: int) -> None:
        kept = [row for row in self.read_metrics() if row["epoch"] <= last_epoch]
        self.metrics.write_text("".join(json.dumps(row) + "\n" for row in kept))


@dataclass(frozen=True)
class RunOutcome:
    status: str
    reason: str = ""
    test: ClassificationReport | None = None


def train_run(
    folder: RunFolder,
    config: TrialConfig,
    data: DataSplits,
    *,
    on_epoch: Callable[[EpochReport], None],
    on_batch: Callable[[int, int], None] | None = None,
) -> RunOutcome:
    """Train ``config`` in ``folder`` (continuing its checkpoint), then test it: what `babysit
    train` and a study's final step both do. A diverged run is a finding, not an error."""
    folder.write_json("config.json", config.to_dict())

    def record(report: EpochReport) -> None:
        folder.append_metrics(report.row())
        on_epoch(report)

    result = train(
        config,
        data,
        on_epoch=record,
        on_batch=on_batch,
        checkpoint_path=folder.checkpoint,
        resume=True,
    )
    if result.status == DIVERGED:
        folder.write_json("result.json", {"status": DIVERGED, "reason": result.reason})
        return RunOutcome(DIVERGED, result.reason)
    if config.cv_folds:  # k models scored on their folds: none of them is the model to test
        folder.write_json("result.json", {"status": result.status, "cv_folds": config.cv_folds})
        return RunOutcome(result.status)
    report = evaluate_on_test(result.model, data, config)
    folder.write_json("test_metrics.json", report.to_dict())
    folder.write_json("result.json", {"status": result.status, "test_accuracy": report.accuracy})
    return RunOutcome(result.status, test=report)
