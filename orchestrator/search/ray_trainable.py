"""The adapter that makes the training loop a Ray Tune trainable: it reports every epoch to
Tune, with a checkpoint, and restores a trial from the epoch Tune restores it to.

Tune's checkpoints are markers of a few bytes (the epoch), all kept; the state itself is the
trial's own file, `checkpoints/<trial>/epoch-N.pt` in the stage folder, the last two epochs
and those of the last minute kept (hard links to the file the loop replaces whole each
epoch). With one real Tune checkpoint kept per trial, a driver killed between Tune deleting
the older one and saving its experiment state restored the trial from a checkpoint that was
gone, and every retry failed.
A restored trial starts from the epoch Tune knows (later epochs run again: Tune may never
have seen their results); when that epoch's file is gone or cut short, from epoch 1."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from orchestrator.names import METRIC, WARNING
from orchestrator.search.checkpoints import epoch_of
from trainables.checkpoint import readable
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.epoch import DIVERGED, EpochReport
from trainables.train import train

KEPT_EPOCHS = 2
KEPT_SECONDS = 60.0


def trial_folder(checkpoints: Path) -> Path:
    """This trial's checkpoints, in the stage's ``checkpoints`` folder."""
    return checkpoints / tune.get_context().get_trial_id()


def run_trial(
    params: dict[str, Any],
    *,
    base: TrialConfig,
    data: DataSplits,
    checkpoints: Path,
    after_epoch: Callable[[EpochReport], None] | None = None,
) -> None:
    """One trial: ``base`` with the sampled ``params``, from the epoch Tune restored it to.
    ``after_epoch`` runs once the epoch is reported (tests use it to plant faults)."""
    config = base.replace(**params)
    node_id = ray.get_runtime_context().get_node_id()  # two nodes may share one IP
    folder = trial_folder(checkpoints)
    folder.mkdir(parents=True, exist_ok=True)
    state, warning = folder / "state.pt", _restore(folder)

    def on_epoch(report: EpochReport) -> None:
        nonlocal warning
        metrics: dict[str, Any] = report.row()
        metrics["node_id"] = node_id
        if report.status == DIVERGED:
            metrics[METRIC] = 0.0  # the scheduler needs the metric; a diverged trial ranks last
        if warning:
            metrics[WARNING], warning = warning, ""
        if report.checkpoint is None:
            tune.report(metrics)
        else:
            _keep(folder, state, report.epoch)
            with tempfile.TemporaryDirectory(prefix="babysitter-epoch-") as marker:
                (Path(marker) / "epoch").write_text(str(report.epoch))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(marker))
        if after_epoch is not None:
            after_epoch(report)

    train(config, data, on_epoch=on_epoch, checkpoint_path=state, resume=True)


def _restore(folder: Path) -> str:
    """Put the state of the epoch Tune restores the trial to in place (none: from epoch 1);
    returns a warning when that state cannot be had."""
    state = folder / "state.pt"
    state.unlink(missing_ok=True)
    restored = tune.get_checkpoint()
    if restored is None:
        return ""
    with restored.as_directory() as marker:
        epoch = int((Path(marker) / "epoch").read_text())
    saved = folder / f"epoch-{epoch}.pt"
    if saved.exists() and readable(saved):
        _link(saved, state)
        return ""
    return f"its checkpoint {saved} is missing or cannot be read; the trial starts again"


def _keep(folder: Path, state: Path, epoch: int) -> None:
    """Link the epoch's state (the loop has just written it) and drop the older ones that
    Tune can no longer restore the trial to: beyond the last two epochs and older than
    KEPT_SECONDS (Tune's saved state lags by time, not epochs: with epochs of 0.2 s it knew
    epoch 4 of a trial killed at epoch 6, whose epoch-4 file was gone)."""
    saved = folder / f"epoch-{epoch}.pt"
    saved.unlink(missing_ok=True)
    _link(state, saved)
    now = time.time()
    for old in folder.glob("epoch-*.pt"):
        with contextlib.suppress(OSError):
            past = epoch_of(old) <= epoch - KEPT_EPOCHS
            if past and now - old.stat().st_mtime > KEPT_SECONDS:
                old.unlink()


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)
