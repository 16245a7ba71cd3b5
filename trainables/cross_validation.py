"""k-fold cross-validation as one trial: on a small data set one validation split is too noisy
to rank configs by, so each config trains k models side by side, one per fold of train + val,
and reports their mean every epoch (so an early-stopping scheduler still sees one trial)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import TrialConfig
from trainables.datasets import DataSplits, Split, channel_stats
from trainables.device import select_runtime
from trainables.epoch import EpochReport, TrainingFold, TrainResult
from trainables.metric_names import FOLD
from trainables.status import TrialStatus
from trainables.trial_state import TrialState

FOLD_SEED_OFFSET = 2  # split_seed picks test, split_seed + 1 val; the folds take + 2


def fold_indices(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index sets covering ``labels``, each with every class's share (each
    class dealt round-robin after a seeded shuffle)."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for i, index in enumerate(members):
            folds[(start + i) % k].append(int(index))
        start += len(members)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fold_splits(data: DataSplits, k: int, seed: int) -> list[DataSplits]:
    """Train + val cut into ``k`` folds: fold i validates on its part and trains on the rest,
    normalized with its own training images' statistics. The test split is left out."""
    pool = merged(data)
    none = Split(pool.train.images[:0], pool.train.labels[:0])
    parts = []
    for held in fold_indices(pool.train.labels, k, seed + FOLD_SEED_OFFSET):
        keep = np.setdiff1d(np.arange(len(pool.train)), held)
        train = pool.train.take(keep)
        mean, std = channel_stats(train.images)
        val = pool.train.take(held)
        parts.append(DataSplits(data.name, train, val, none, data.class_names, mean, std))
    return parts


def merged(data: DataSplits) -> DataSplits:
    """Train and val as one training split (no validation images), with its statistics: what a
    cross-validated study's final model trains on."""
    images = np.concatenate([data.train.images, data.val.images])
    labels = np.concatenate([data.train.labels, data.val.labels])
    mean, std = channel_stats(images)
    return DataSplits(
        data.name,
        Split(images, labels),
        Split(images[:0], labels[:0]),
        data.test,
        data.class_names,
        mean,
        std,
    )


def train_folds(
    config: TrialConfig,
    data: DataSplits,
    *,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """``config`` trained on each of its ``cv_folds`` folds, an epoch of every fold at a time;
    each epoch reports the folds' mean and its error. One checkpoint holds every fold."""
    runtime = select_runtime(config.device, config.threads)
    parts = fold_splits(data, config.cv_folds, config.split_seed)
    single = config.replace(cv_folds=0)
    history: list[dict[str, float]] = []
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path, config.to_dict())
        states = [
            TrialState.restore(s, single, p, runtime)
            for s, p in zip(saved["folds"], parts, strict=True)
        ]
        history = list(saved["history"])
    else:
        states = [TrialState.create(single, p, runtime) for p in parts]
    folds = [TrainingFold(s, p, runtime) for s, p in zip(states, parts, strict=True)]
    result = TrainResult(TrialStatus.COMPLETED, states[0].model, history)
    while len(history) < config.epochs:
        rows = []
        for fold in folds:
            rows.append(fold.epoch(on_batch))
            if fold.reason:
                break
        failed = next((f for f in folds if f.reason), None)
        if failed is not None:
            result.status, result.reason = TrialStatus.DIVERGED, f"fold {folds.index(failed)}: "
            result.reason += failed.reason
            metrics = {k: rows[-1][k] for k in ("epoch", "lr", "train_loss", "train_acc")}
            history.append(metrics)
            if on_epoch:
                on_epoch(EpochReport(len(history), metrics, TrialStatus.DIVERGED))
            break
        history.append(combine(rows, folds))
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path,
                {
                    "config": config.to_dict(),
                    "epoch": len(history),
                    "history": history,
                    "folds": [s.to_dict() for s in states],
                },
            )
        done = len(history) == config.epochs
        status = TrialStatus.COMPLETED if done else TrialStatus.RUNNING
        if on_epoch:
            on_epoch(EpochReport(len(history), history[-1], status, checkpoint_path))
    result.initial_loss = statistics.fmean(s.initial_loss for s in states)
    return result


def combine(rows: list[dict[str, float]], folds: list[TrainingFold]) -> dict[str, float]:
    """The folds' epoch as one: means, and the score's error as the larger of the spread
    across folds and the binomial error over every validation image."""
    k = len(rows)
    same = ("epoch", "lr")
    mean = {key: statistics.fmean(r[key] for r in rows) for key in rows[0] if key not in same}
    sizes = [len(f.val.y) for f in folds]
    total = sum(sizes)
    correct = sum(r["val_acc"] * n for r, n in zip(rows, sizes, strict=True))
    p = (correct + 1) / (total + 2)
    spread = statistics.stdev(r["val_acc"] for r in rows) / math.sqrt(k) if k > 1 else 0.0
    metrics = {
        **mean,
        **{key: rows[0][key] for key in same},
        "val_acc": correct / total,
        "val_acc_se": max(spread, math.sqrt(p * (1 - p) / total)),
        "val_loss_se": math.sqrt(sum(r["val_loss_se"] ** 2 for r in rows)) / k,
        "epoch_seconds": sum(r["epoch_seconds"] for r in rows),
        "folds": k,
    }
    for i, r in enumerate(rows):
        metrics[f"{FOLD}{i}/val_acc"] = r["val_acc"]
        metrics[f"{FOLD}{i}/val_loss"] = r["val_loss"]
    return metrics
