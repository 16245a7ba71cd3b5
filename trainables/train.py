"""The training loop: one function, used by ``babysit train`` and, through a small adapter, as a
Ray Tune trainable. It knows nothing of Ray or MLflow; it reports through ``on_epoch``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainables.config import TrialConfig
from trainables.cross_validation import train_folds
from trainables.datasets import DataSplits
from trainables.device import select_runtime
from trainables.epoch import COMPLETED, DIVERGED, RUNNING, EpochReport, TrainingFold, TrainResult
from trainables.trial_state import TrialState


def train(
    config: TrialConfig,
    data: DataSplits,
    *,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``config`` on ``data``; with ``resume`` and an existing checkpoint, continue it
    exactly (same metrics as an uninterrupted run on CPU with the same seed). A config with
    ``cv_folds`` trains one model per fold of train + val and reports their mean."""
    if config.cv_folds:
        return train_folds(
            config,
            data,
            on_epoch=on_epoch,
            on_batch=on_batch,
            checkpoint_path=checkpoint_path,
            resume=resume,
        )
    runtime = select_runtime(config.device, config.threads)
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = TrialState.load(checkpoint_path, config, data, runtime)
    else:
        state = TrialState.create(config, data, runtime)
    fold = TrainingFold(state, data, runtime)
    result = TrainResult(COMPLETED, state.model, state.history)
    while state.epoch < config.epochs:
        metrics = fold.epoch(on_batch)
        if fold.reason:
            result.status, result.reason = DIVERGED, fold.reason
            if on_epoch:
                on_epoch(EpochReport(state.epoch + 1, metrics, DIVERGED))
            break
        if checkpoint_path is not None:
            state.save(checkpoint_path)
        status = COMPLETED if state.epoch == config.epochs else RUNNING
        if on_epoch:
            on_epoch(EpochReport(state.epoch, metrics, status, checkpoint_path))
    result.initial_loss = state.initial_loss
    return result
