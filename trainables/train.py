"""The training loop: one function, used by ``babysit train`` and, through a small adapter, as a
Ray Tune trainable. It knows nothing of Ray or MLflow; it reports through ``on_epoch``."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.augment import augment_batch
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import TrialConfig
from trainables.datasets import DataSplits, Split
from trainables.device import Runtime, select_runtime
from trainables.metrics import ClassificationReport, classification_report
from trainables.model import SeedCNN

COMPLETED, DIVERGED = "completed", "diverged"
EVAL_BATCH = 1024
LOSS_EMA = 0.9


@dataclass(frozen=True)
class EpochReport:
    """What a trial says after each epoch (and once more, partial, if it diverges)."""

    epoch: int
    metrics: dict[str, float]
    status: str
    checkpoint: Path | None = None


@dataclass
class TrainResult:
    status: str
    model: SeedCNN
    history: list[dict[str, float]] = field(default_factory=list)
    initial_loss: float = math.nan
    reason: str = ""

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def build_model(config: TrialConfig, data: DataSplits) -> SeedCNN:
    return SeedCNN(
        data.channels,
        data.num_classes,
        data.image_size,
        batch_norm=config.batch_norm,
        he_init=config.he_init,
        dropout=config.dropout,
        width=config.width,
    )


def lr_at(config: TrialConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``: a pure function, so a resumed run needs no
    scheduler state beyond the epoch number."""
    if config.lr_schedule == "step":
        return config.lr * config.lr_step_gamma ** (epoch // config.lr_step_epochs)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


def l2_penalty(model: SeedCNN) -> torch.Tensor:
    """Keras-style ``sum(w**2)`` over conv and FC weights, not biases or batch-norm scales."""
    return sum(w.pow(2).sum() for w in model.layer_weights().values())


def make_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
    )


class Normalizer:
    """Zero-centering with the training split's per-channel statistics: what every image goes
    through before the model (and what the data sanity check measures)."""

    def __init__(self, data: DataSplits, runtime: Runtime) -> None:
        shape = (1, data.channels, 1, 1)
        self.mean = torch.tensor(data.mean, device=runtime.device).view(shape)
        self.inv_std = 1 / torch.tensor(data.std, device=runtime.device).view(shape)
        self.memory_format = runtime.memory_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) * self.inv_std
        return x.contiguous(memory_format=self.memory_format)


def to_device(split: Split, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    # Arrays from Ray's object store are read-only shared memory; the loop only reads them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images = torch.from_numpy(np.ascontiguousarray(split.images)).to(runtime.device)
        labels = torch.from_numpy(np.asarray(split.labels)).to(runtime.device)
    return images, labels


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
    exactly (same metrics as an uninterrupted run on CPU with the same seed)."""
    runtime = select_runtime(config.device, config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model(config, data).to(runtime.device, memory_format=runtime.memory_format)
    optimizer = make_optimizer(config, model)
    normalize = Normalizer(data, runtime)
    train_x, train_y = to_device(data.train, runtime)
    val = to_device(data.val, runtime)
    weights = model.layer_weights()
    result = TrainResult(status=COMPLETED, model=model)
    loss_ema = math.nan
    start_epoch = 0

    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, config.to_dict())
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["generator"])
        if runtime.is_cuda and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        start_epoch = state["epoch"]
        result.history = list(state["history"])
        result.initial_loss = state["initial_loss"]
        loss_ema = state["loss_ema"]

    n, batch_size = len(train_y), config.batch_size
    batches = math.ceil(n / batch_size)
    for epoch in range(start_epoch, config.epochs):
        lr = lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(runtime.device)
        loss_sum = torch.zeros((), device=runtime.device)
        correct = torch.zeros((), dtype=torch.long, device=runtime.device)
        seen = 0
        ratios: dict[str, float] = {}
        for b in range(batches):
            index = order[b * batch_size : (b + 1) * batch_size]
            x = normalize(train_x[index])
            if config.augment:
                x = augment_batch(x, generator)
            y = train_y[index]
            with runtime.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            if config.l2 > 0:
                loss = loss + config.l2 * l2_penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            last = b == batches - 1
            before = {k: w.detach().clone() for k, w in weights.items()} if last else None
            optimizer.step()
            if before is not None:
                ratios = {
                    f"update_ratio/{k}": float((w.detach() - before[k]).norm() / before[k].norm())
                    for k, w in weights.items()
                }

            value = loss.item()
            if math.isnan(result.initial_loss):
                result.initial_loss = value
                loss_ema = value
            loss_ema = LOSS_EMA * loss_ema + (1 - LOSS_EMA) * value
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += len(y)
            if (
                not math.isfinite(value)
                or loss_ema > config.divergence_factor * result.initial_loss
            ):
                result.status = DIVERGED
                result.reason = (
                    f"loss {value:.4g} (smoothed {loss_ema:.4g}) at epoch {epoch + 1}, batch "
                    f"{b + 1}: above {config.divergence_factor:g}x the initial "
                    f"{result.initial_loss:.4g} or not finite"
                )
                metrics = {"epoch": epoch + 1, "lr": lr, "train_loss": value}
                metrics["train_acc"] = correct.item() / seen
                result.history.append(metrics)
                if on_epoch:
                    on_epoch(EpochReport(epoch + 1, metrics, DIVERGED))
                return result
            if on_batch:
                on_batch(b + 1, batches)

        train_seconds = time.perf_counter() - t0
        val_loss, val_acc, _ = evaluate(model, *val, normalize, runtime)
        metrics = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "epoch_seconds": time.perf_counter() - t0,
            "images_per_s": seen / train_seconds,
            **ratios,
        }
        result.history.append(metrics)
        if checkpoint_path is not None:
            rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
            if runtime.is_cuda:
                rng["cuda"] = torch.cuda.get_rng_state()
            save_checkpoint(
                checkpoint_path,
                {
                    "config": config.to_dict(),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                    "history": result.history,
                    "initial_loss": result.initial_loss,
                    "loss_ema": loss_ema,
                },
            )
        status = COMPLETED if epoch + 1 == config.epochs else "running"
        if on_epoch:
            on_epoch(EpochReport(epoch + 1, metrics, status, checkpoint_path))
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    runtime: Runtime,
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and predictions, in eval mode, without the L2 penalty."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=runtime.device)
    predictions = []
    for i in range(0, len(labels), EVAL_BATCH):
        x = normalize(images[i : i + EVAL_BATCH])
        with runtime.autocast():
            logits = model(x).float()
        loss += F.cross_entropy(logits, labels[i : i + EVAL_BATCH], reduction="sum")
        predictions.append(logits.argmax(dim=1))
    model.train(was_training)
    predicted = torch.cat(predictions)
    accuracy = (predicted == labels).float().mean().item()
    return loss.item() / len(labels), accuracy, predicted


def evaluate_on_test(
    model: nn.Module, data: DataSplits, config: TrialConfig
) -> ClassificationReport:
    """Accuracy, confusion matrix and per-class precision / recall / F1 on the test split."""
    runtime = select_runtime(config.device, config.threads)
    images, labels = to_device(data.test, runtime)
    loss, _, predicted = evaluate(model, images, labels, Normalizer(data, runtime), runtime)
    return classification_report(
        labels.cpu().numpy(), predicted.cpu().numpy(), data.class_names, loss
    )
