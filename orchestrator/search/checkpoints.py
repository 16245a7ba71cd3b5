"""The trials' own checkpoints in a stage's folder (``checkpoints/<trial>/epoch-N.pt``, see
ray_trainable.py), and what is left of them once the stage's table is written: then no trial
of the stage is restored again, and a study of 12 small trials kept 500 MB of them."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

CHECKPOINTS = "checkpoints"  # the stage folder's subfolder of trial checkpoints


def epoch_of(path: Path) -> int:
    return int(path.stem.removeprefix("epoch-"))


def prune(stage: Path, keep: Collection[str]) -> None:
    """Drop every trial's checkpoints but the last epoch of those in ``keep`` (the stage's
    best, which a user may want to load)."""
    folder = stage / CHECKPOINTS
    if not folder.is_dir():
        return
    for trial in folder.iterdir():
        if trial.name not in keep:
            shutil.rmtree(trial, ignore_errors=True)
            continue
        saved = sorted(trial.glob("epoch-*.pt"), key=epoch_of)
        for path in [*saved[:-1], trial / "state.pt"]:
            path.unlink(missing_ok=True)
