"""A fused group's training loop: ``train`` for K members at once. Each member keeps its own
``TrainingFold`` (its guard, metrics, history and checkpoint); the group runs the batches through
``FusedModels`` and hands each member its share. A member that diverges, or that its caller stops
(an early-stopping rule at a rung), leaves the stack at the end of the epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainables.augment import augment_batch
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.device import Runtime, select_runtime
from trainables.epoch import (
    COMPLETED,
    DIVERGED,
    RUNNING,
    SYNC_EVERY,
    EpochReport,
    LossGuard,
    TrainingFold,
    TrainResult,
    lr_at,
)
from trainables.evaluation import device_split
from trainables.fused import FusedModels
from trainables.metric_names import UPDATE_RATIO
from trainables.networks import layer_weights
from trainables.trial_state import TrialState

ORDER_SEED_STRIDE = 7919  # the group's data order: a pure function of its first seed and epoch

# (member index, its report) -> True to keep training it, False to stop it here
OnMemberEpoch = Callable[[int, EpochReport], bool]


def epoch_generator(order_seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """Draws the order and augmentation every member sees in ``epoch``: a pure function of the
    group's seed and the epoch, so a resumed group (or the part of it still training) draws
    the same ones."""
    return torch.Generator(device=device).manual_seed(order_seed + ORDER_SEED_STRIDE * epoch)


def train_fused(
    configs: list[TrialConfig],
    data: DataSplits,
    *,
    on_epoch: OnMemberEpoch | None = None,
    checkpoint_paths: list[Path] | None = None,
    resume: bool = False,
    order_seed: int | None = None,
) -> list[TrainResult]:
    """Train ``configs`` as one group (they must differ only in what ``trainables.fused``
    allows); each member resumes from its own checkpoint when ``resume`` finds one. The data
    order comes from ``order_seed`` (the first member's seed unless given: a group resumed
    without members that left it passes the seed it began with)."""
    seed = configs[0].seed if order_seed is None else order_seed
    runtime = select_runtime(configs[0].device, configs[0].threads)
    paths = checkpoint_paths or [None] * len(configs)
    states = [
        TrialState.load(p, c, data, runtime)
        if resume and p and p.exists()
        else TrialState.create(c, data, runtime)
        for c, p in zip(configs, paths, strict=True)
    ]
    results = [TrainResult(COMPLETED, s.model, s.history) for s in states]
    splits = device_split(data.train, data, runtime), device_split(data.val, data, runtime)
    folds = [TrainingFold(s, data, runtime, splits) for s in states]
    # a group killed while it saved its members' checkpoints resumes them in a stack per epoch
    starts = sorted({s.epoch for s in states if s.epoch < s.config.epochs})
    for start in starts:
        active = [k for k, s in enumerate(states) if s.epoch == start]
        _train_stack(active, folds, paths, results, on_epoch, runtime, seed)
    for result, state in zip(results, states, strict=True):
        result.initial_loss = state.initial_loss
    return results


def _train_stack(
    active: list[int],
    folds: list[TrainingFold],
    paths: list[Path | None],
    results: list[TrainResult],
    on_epoch: OnMemberEpoch | None,
    runtime: Runtime,
    order_seed: int,
) -> None:
    """Members ``active`` (at one epoch) stacked, epoch after epoch, until none is left. Each
    epoch is reported by every member before any is saved: a group killed in between runs that
    epoch again, all members together, and reports it twice (the stage keeps the last) instead of
    resuming past an unreported epoch."""
    group = FusedModels([folds[k].state for k in active], runtime)
    while active:
        members = [folds[k] for k in active]
        all_metrics = fused_epoch(group, members, runtime, order_seed)
        reports = [
            _report(fold, metrics, paths[k])
            for k, fold, metrics in zip(active, members, all_metrics, strict=True)
        ]
        leaving = []
        for k, fold, report in zip(active, members, reports, strict=True):
            if fold.reason:
                results[k].status, results[k].reason = DIVERGED, fold.reason
            keep = on_epoch(k, report) if on_epoch else True
            if report.status != RUNNING or not keep:
                leaving.append(k)
        for k, report in zip(active, reports, strict=True):
            if report.checkpoint is not None:
                folds[k].state.save(report.checkpoint)
        if leaving:
            stay = [i for i, k in enumerate(active) if k not in leaving]
            active = [active[i] for i in stay]
            if active:
                group.keep(stay)


def _report(fold: TrainingFold, metrics: dict[str, float], path: Path | None) -> EpochReport:
    state = fold.state
    if fold.reason:
        return EpochReport(state.epoch + 1, metrics, DIVERGED)
    done = state.epoch == state.config.epochs
    return EpochReport(state.epoch, metrics, COMPLETED if done else RUNNING, path)


def fused_epoch(
    group: FusedModels, folds: list[TrainingFold], runtime: Runtime, order_seed: int
) -> list[dict[str, float]]:
    """One epoch of every member (in stack order): the batches through the stack, each
    member's figures to its own guard every ``SYNC_EVERY`` steps (one host sync for all), then
    each member's metrics. A member whose guard trips stops counting and trains on to the end
    of the epoch with the others (its gradients are its own; it leaves the stack after)."""
    states = [f.state for f in folds]
    lrs = [lr_at(s.config, s.epoch) for s in states]
    group.set_hyper([s.config for s in states], lrs)
    guards = [LossGuard(s, runtime.device) for s in states]
    split, size = folds[0].train, states[0].config.batch_size
    n = len(split.y)
    batches = -(-n // size)
    generator = epoch_generator(order_seed, states[0].epoch, runtime.device)
    order = torch.randperm(n, generator=generator, device=runtime.device)
    pending = torch.zeros(SYNC_EVERY, len(states), 3, device=runtime.device)
    sizes: list[int] = []
    t0 = time.perf_counter()
    group.train()
    before: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[runtime.device] if runtime.is_cuda else []):
        torch.manual_seed(order_seed + ORDER_SEED_STRIDE * states[0].epoch + 1)  # dropout masks
        for b in range(batches):
            index = order[b * size : (b + 1) * size]
            x, y = split.x[index].contiguous(memory_format=runtime.memory_format), split.y[index]
            if states[0].config.augment:
                x = augment_batch(x, generator)
            if b == batches - 1:
                before = {name: group.params[name].clone() for name in group.penalized}
            loss, correct, penalty = group.step(x, y)
            pending[len(sizes)] = torch.stack((loss, correct.float(), penalty), dim=1)
            sizes.append(len(y))
            if len(sizes) == SYNC_EVERY or b == batches - 1:
                rows = pending[: len(sizes)].tolist()
                for k, guard in enumerate(guards):
                    if not guard.reason:
                        guard.take([row[k] for row in rows], sizes)
                sizes = []
    seconds = time.perf_counter() - t0
    ratios = update_ratios(group, before, folds)
    group.write_back(states)
    val = folds[0].val
    scores = group.assess(val.x, val.y) if len(val.y) else [None] * len(folds)
    return [
        fold.close(guard, ratio, lr, t0, seconds, scored)
        for fold, guard, ratio, lr, scored in zip(folds, guards, ratios, lrs, scores, strict=True)
    ]


def update_ratios(
    group: FusedModels, before: dict[str, torch.Tensor], folds: list[TrainingFold]
) -> list[dict[str, float]]:
    """Each member's last-step update / weight ratio per layer, named as ``run_epoch`` names
    them (conv1, ..., fc2)."""
    layers = dict(zip(layer_weights(folds[0].state.model), group.penalized, strict=True))
    columns = [
        (group.params[name] - before[name]).flatten(1).norm(dim=1)
        / before[name].flatten(1).norm(dim=1)
        for name in layers.values()
    ]
    values = torch.stack(columns, dim=1).tolist()
    return [
        {f"{UPDATE_RATIO}{label}": v for label, v in zip(layers, row, strict=True)}
        for row in values
    ]
