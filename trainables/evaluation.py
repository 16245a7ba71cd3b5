"""A split on the training device, normalized once, and a model scored on it: what training,
validation, the final test and the report's model views share."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.datasets import DataSplits, Split
from trainables.device import Runtime, select_runtime
from trainables.metrics import ClassificationReport, classification_report

EVAL_BATCH = 1024


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


def device_split(split: Split, data: DataSplits, runtime: Runtime) -> DeviceSplit:
    """``split`` normalized once, resident on the training device (chunked, so the float copy
    is the only large allocation)."""
    images, labels = to_device(split, runtime)
    normalize = Normalizer(data, runtime)
    x = torch.empty(images.shape, device=runtime.device).contiguous(
        memory_format=runtime.memory_format
    )
    for i in range(0, len(images), EVAL_BATCH):
        x[i : i + EVAL_BATCH] = normalize(images[i : i + EVAL_BATCH])
    return DeviceSplit(x, labels)


@dataclass(frozen=True)
class DeviceSplit:
    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Evaluation:
    """Loss and accuracy on a split, each with its standard error: the noise a ranking must
    not mistake for a difference between trials."""

    loss: float
    loss_se: float
    accuracy: float
    accuracy_se: float
    predicted: torch.Tensor


@torch.no_grad()
def assess(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runtime: Runtime) -> Evaluation:
    """Mean cross-entropy and accuracy on normalized images, in eval mode, without the L2
    penalty (one host sync). The loss's error is the per-image losses' standard deviation over
    sqrt(n); the accuracy's is binomial, with one success and one failure added so that 0 and 1
    are not certain on a small split."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, device=runtime.device)
    predictions = []
    for i in range(0, len(y), EVAL_BATCH):
        with runtime.autocast():
            logits = model(x[i : i + EVAL_BATCH]).float()
        losses = F.cross_entropy(logits, y[i : i + EVAL_BATCH], reduction="none")
        sums += torch.stack((losses.sum(), losses.square().sum()))
        predictions.append(logits.argmax(dim=1))
    model.train(was_training)
    predicted = torch.cat(predictions)
    total, squares, correct = torch.cat((sums, (predicted == y).sum().float().view(1))).tolist()
    return evaluation(total, squares, correct, predicted)


def evaluation(total: float, squares: float, correct: float, predicted: torch.Tensor) -> Evaluation:
    """The figures from the sums of the per-image losses, their squares and the hits."""
    n = len(predicted)
    loss = total / n
    spread = math.sqrt(max(squares / n - loss**2, 0.0) / max(n - 1, 1))
    p = (correct + 1) / (n + 2)
    return Evaluation(loss, spread, correct / n, math.sqrt(p * (1 - p) / n), predicted)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, runtime: Runtime
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and predictions (``assess`` without the errors)."""
    result = assess(model, x, y, runtime)
    return result.loss, result.accuracy, result.predicted


def evaluate_on_test(
    model: nn.Module, data: DataSplits, config: TrialConfig
) -> ClassificationReport:
    """Accuracy, confusion matrix and per-class precision / recall / F1 on the test split."""
    runtime = select_runtime(config.device, config.threads)
    test = device_split(data.test, data, runtime)
    loss, _, predicted = evaluate(model, test.x, test.y, runtime)
    return classification_report(
        test.y.cpu().numpy(), predicted.cpu().numpy(), data.class_names, loss
    )
