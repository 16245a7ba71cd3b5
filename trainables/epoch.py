"""One epoch of one model: the optimizer steps, the L2 penalty, the divergence guard and the
epoch's metrics. ``train`` runs these for one model, cross-validation for k side by side."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.augment import augment_batch
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.device import Runtime
from trainables.evaluation import DeviceSplit, Evaluation, assess, device_split
from trainables.metric_names import TRIAL_STATUS, UPDATE_RATIO
from trainables.networks import layer_weights
from trainables.status import TrialStatus
from trainables.trial_state import TrialState

COMPLETED, DIVERGED, RUNNING = TrialStatus.COMPLETED, TrialStatus.DIVERGED, TrialStatus.RUNNING
LOSS_EMA = 0.9
# The loop reads its losses from the device once per SYNC_EVERY steps (nanoGPT and airbench
# sync as rarely); a diverged trial runs at most SYNC_EVERY - 1 steps past the bad batch.
SYNC_EVERY = 8


@dataclass(frozen=True)
class EpochReport:
    """What a trial says after each epoch (and once more, partial, if it diverges)."""

    epoch: int
    metrics: dict[str, float]
    status: str
    checkpoint: Path | None = None

    def row(self) -> dict[str, Any]:
        """The metrics with the trial's status: one epoch row as every table keeps it."""
        return {**self.metrics, TRIAL_STATUS: self.status}


@dataclass
class TrainResult:
    status: str
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    initial_loss: float = math.nan
    reason: str = ""

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def lr_at(config: TrialConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``: a pure function, so a resumed run needs no
    scheduler state beyond the epoch number."""
    if config.lr_schedule == "step":
        return config.lr * config.lr_step_gamma ** (epoch // config.lr_step_epochs)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """Keras-style ``sum(w**2)`` over conv and FC weights, not biases or batch-norm scales."""
    return _sum_of_squares(list(layer_weights(model).values()))


def _sum_of_squares(weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(weights)).square().sum()


def add_l2(weights: list[torch.Tensor], l2: float) -> torch.Tensor:
    """Add the penalty ``l2 * sum(w**2)`` to the loss the way autograd would (its gradient,
    ``2 * l2 * w``, in one fused op) and return its value, which the training loss includes."""
    with torch.no_grad():
        penalty = l2 * _sum_of_squares(weights)
        pairs = [(w.grad, w) for w in weights if w.grad is not None]
        if pairs:
            grads, values = zip(*pairs, strict=True)
            torch._foreach_add_(list(grads), list(values), alpha=2 * l2)
    return penalty


def gradients(
    model: nn.Module,
    weights: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    l2: float,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward of one batch with the L2 penalty's gradient added: the loss (the
    penalty included), the logits and the penalty, all still on the device."""
    with runtime.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    penalty = add_l2(weights, l2) if l2 > 0 else torch.zeros_like(loss)
    return loss.detach() + penalty, logits, penalty


class LossGuard:
    """The divergence rule without a host sync per step: each batch's loss and correct count
    stay on the device and are read together every ``SYNC_EVERY`` steps and at the epoch's end;
    the rule then runs over each batch in order. So a diverged trial stops within
    ``SYNC_EVERY`` steps, and its reason names the batch where the loss crossed the line."""

    def __init__(self, state: TrialState, device: torch.device) -> None:
        self.state = state
        self.pending = torch.zeros(SYNC_EVERY, 3, device=device)
        self.sizes: list[int] = []
        self.batches = self.seen = self.correct = 0
        self.loss_sum = self.penalty_sum = self.last_loss = 0.0
        self.reason = ""

    def add(
        self, loss: torch.Tensor, correct: torch.Tensor, penalty: torch.Tensor, size: int
    ) -> bool:
        """Keep one batch's figures (``loss`` includes the L2 ``penalty``); True when it is
        time to read them."""
        self.pending[len(self.sizes)] = torch.stack((loss, correct.float(), penalty))
        self.sizes.append(size)
        return len(self.sizes) == SYNC_EVERY

    def read(self) -> bool:
        """Run the rule over the batches kept since the last read (one host sync); True when
        the trial diverged (``reason`` and ``last_loss`` say where)."""
        rows, sizes = self.pending[: len(self.sizes)].tolist(), self.sizes
        self.sizes = []
        return self.take(rows, sizes)

    def take(self, rows: list[list[float]], sizes: list[int]) -> bool:
        """The rule over batches read elsewhere (a fused group reads all its members' at once):
        ``rows`` of (loss, correct, penalty)."""
        state, factor = self.state, self.state.config.divergence_factor
        for (loss, correct, penalty), size in zip(rows, sizes, strict=True):
            self.batches += 1
            self.seen += size
            self.correct += int(correct)
            self.loss_sum += loss * size
            self.penalty_sum += penalty * size
            self.last_loss = loss
            if math.isnan(state.initial_loss):
                state.initial_loss = state.loss_ema = loss
            state.loss_ema = LOSS_EMA * state.loss_ema + (1 - LOSS_EMA) * loss
            if not math.isfinite(loss) or state.loss_ema > factor * state.initial_loss:
                self.reason = (
                    f"loss {loss:.4g} (smoothed {state.loss_ema:.4g}) at epoch "
                    f"{state.epoch + 1}, batch {self.batches}: above {factor:g}x the initial "
                    f"{state.initial_loss:.4g} or not finite"
                )
                return True
        return False


class TrainingFold:
    """One model trained on one split and scored on its validation images, an epoch at a
    time: ``train`` runs one; cross-validation runs k side by side."""

    def __init__(
        self,
        state: TrialState,
        data: DataSplits,
        runtime: Runtime,
        splits: tuple[DeviceSplit, DeviceSplit] | None = None,
    ) -> None:
        """``splits``: train and val already on the device (members of a fused group share
        them)."""
        self.state, self.runtime = state, runtime
        self.train, self.val = splits or (
            device_split(data.train, data, runtime),
            device_split(data.val, data, runtime),
        )
        counts = np.bincount(data.train.labels, minlength=data.num_classes)
        self.chance = float(counts.max() / max(counts.sum(), 1))
        self.reason = ""
        if math.isnan(state.initial_val_loss) and len(self.val.y):
            state.initial_val_loss = assess(state.model, self.val.x, self.val.y, runtime).loss

    def epoch(self, on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """Train one epoch and validate; the metrics (partial, with ``reason`` set, when the
        guard stopped the epoch: the trial diverged). A split without validation images (a final
        model trained on train + val) reports no validation metrics."""
        t0 = time.perf_counter()
        lr = lr_at(self.state.config, self.state.epoch)
        guard, ratios = run_epoch(self.state, self.train, lr, self.runtime, on_batch)
        return self.close(guard, ratios, lr, t0, time.perf_counter() - t0)

    def close(
        self,
        guard: LossGuard,
        ratios: dict[str, float],
        lr: float,
        t0: float,
        seconds: float,
        scored: Evaluation | None = None,
    ) -> dict[str, float]:
        """The epoch's metrics from what its guard counted, ``seconds`` of training since
        ``t0``; validation is scored here unless ``scored`` (a fused group scores its members
        together)."""
        state = self.state
        if guard.reason:
            self.reason = guard.reason
            metrics = {"epoch": state.epoch + 1, "lr": lr, "train_loss": guard.last_loss}
            metrics["train_acc"] = guard.correct / guard.seen
            state.history.append(metrics)
            return metrics
        seen, train_seconds = guard.seen, seconds
        state.epoch += 1
        metrics = {
            "epoch": state.epoch,
            "lr": lr,
            "train_loss": guard.loss_sum / seen,
            "train_acc": guard.correct / seen,
            "train_penalty": guard.penalty_sum / seen,
            "chance_acc": self.chance,
        }
        if len(self.val.y):
            scored = scored or assess(state.model, self.val.x, self.val.y, self.runtime)
            metrics |= {
                "val_loss": scored.loss,
                "val_loss_se": scored.loss_se,
                "val_loss_initial": state.initial_val_loss,
                "val_acc": scored.accuracy,
                "val_acc_se": scored.accuracy_se,
            }
        metrics |= {
            "epoch_seconds": time.perf_counter() - t0,
            "images_per_s": seen / train_seconds,
            **ratios,
        }
        state.history.append(metrics)
        return metrics


def run_epoch(
    state: TrialState,
    split: DeviceSplit,
    lr: float,
    runtime: Runtime,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[LossGuard, dict[str, float]]:
    """One pass over ``split`` in a random order; stops early once the guard sees divergence
    (``guard.reason`` says why). Returns the guard and the last step's update / weight ratios."""
    config, model, optimizer = state.config, state.model, state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    named = layer_weights(model)
    weights = list(named.values())
    guard = LossGuard(state, runtime.device)
    n, size = len(split.y), config.batch_size
    batches = math.ceil(n / size)
    order = torch.randperm(n, generator=state.generator, device=state.generator.device)
    ratios: dict[str, float] = {}
    model.train()
    for b in range(batches):
        index = order[b * size : (b + 1) * size]
        x, y = split.x[index].contiguous(memory_format=runtime.memory_format), split.y[index]
        if config.augment:
            x = augment_batch(x, state.generator)
        optimizer.zero_grad(set_to_none=True)
        loss, logits, penalty = gradients(model, weights, x, y, config.l2, runtime)
        if b == batches - 1:
            before = [w.detach().clone() for w in weights]
            optimizer.step()
            changes = [
                (w.detach() - old).norm() / old.norm()
                for w, old in zip(weights, before, strict=True)
            ]
            values = torch.stack(changes).tolist()
            ratios = {f"{UPDATE_RATIO}{k}": v for k, v in zip(named, values, strict=True)}
        else:
            optimizer.step()
        correct = (logits.argmax(dim=1) == y).sum()
        if guard.add(loss, correct, penalty, len(y)) and guard.read():
            return guard, ratios
        if on_batch:
            on_batch(b + 1, batches)
    guard.read()
    return guard, ratios
