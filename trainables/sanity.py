"""The babysitting preflight of the seed recipe (../shared/seeds): before a search spends
compute, check that the inputs are zero-centered, the loss starts at ln(C), regularization
raises it, 20 examples can be overfit, and find the learning rates where the loss falls
without exploding. Pure torch; the orchestrator prints, saves and records what this returns."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.device import Runtime, select_runtime
from trainables.epoch import LOSS_EMA, l2_penalty
from trainables.evaluation import device_split, evaluate
from trainables.networks import layer_weights
from trainables.sanity_report import (
    EXPLODES,
    FAIL,
    LEARNS,
    PASS,
    TOO_LOW,
    Check,
    Probe,
    SanityReport,
    SanitySettings,
)
from trainables.sanity_verdicts import (
    check_data,
    check_initial_loss,
    check_lr_probe,
    check_regularization,
    check_update_ratio,
    propose_range,
)
from trainables.trial_state import build_model, make_optimizer

ModelBuilder = Callable[[TrialConfig, DataSplits], nn.Module]


def run_checks(
    config: TrialConfig,
    data: DataSplits,
    settings: SanitySettings = SanitySettings(),
    build: ModelBuilder = build_model,
) -> SanityReport:
    """Run the checks ``settings`` names, in the recipe's order, on ``config``'s model."""
    t0 = time.perf_counter()
    bench = _Bench(config, data, settings, build)
    wanted = set(settings.checks)
    checks = []
    if "data" in wanted:
        checks.append(check_data(data, bench.normalized(5 * settings.sample)))
    if wanted & {"initial_loss", "regularization"}:
        loss, accuracy, regularized = bench.initial()
        if "initial_loss" in wanted:
            classes, n = data.num_classes, len(bench.sample)
            tolerance = settings.loss_tolerance
            checks.append(check_initial_loss(loss, accuracy, classes, bench.chance, n, tolerance))
        if "regularization" in wanted:
            checks.append(check_regularization(loss, regularized, settings.strong_l2))
    if "overfit" in wanted:
        checks.append(bench.overfit())
    probes: list[Probe] = []
    lr_range = None
    if wanted & {"lr_probe", "update_ratio", "beats_chance"}:
        probes, best = bench.probe_all()
        lr_range = propose_range(probes)
        if "lr_probe" in wanted:
            checks.append(check_lr_probe(probes, lr_range))
        if "update_ratio" in wanted:
            checks.append(check_update_ratio(probes))
        if "beats_chance" in wanted:
            checks.append(bench.beats_chance(best))
    return SanityReport(checks, probes, lr_range, time.perf_counter() - t0)


class _Bench:
    """The model, data and device the checks share: fresh models from one seed, so every
    probe starts from the same weights the initial-loss check measured."""

    def __init__(
        self, config: TrialConfig, data: DataSplits, settings: SanitySettings, build: ModelBuilder
    ) -> None:
        self.config = config.replace(l2=0.0, augment=False)
        self.data, self.settings, self.build = data, settings, build
        self.runtime: Runtime = select_runtime(config.device, config.threads)
        self.train = device_split(data.train, data, self.runtime)
        rng = np.random.default_rng(config.seed)
        self.order = torch.from_numpy(rng.permutation(len(data.train))).to(self.runtime.device)
        self.sample = self.order[: settings.sample]
        self.chance = _majority_share(data.train.labels)

    def normalized(self, count: int) -> torch.Tensor:
        """``count`` random training images as the model sees them."""
        return self.train.x[self.order[:count]]

    def model(self, dropout: float | None = None) -> nn.Module:
        torch.manual_seed(self.config.seed)
        config = self.config if dropout is None else self.config.replace(dropout=dropout)
        model = self.build(config, self.data)
        return model.to(self.runtime.device, memory_format=self.runtime.memory_format)

    @torch.no_grad()
    def loss_on(self, model: nn.Module, index: torch.Tensor) -> tuple[float, float]:
        logits = model(self.train.x[index]).float()
        labels = self.train.y[index]
        loss = F.cross_entropy(logits, labels).item()
        return loss, (logits.argmax(dim=1) == labels).float().mean().item()

    def initial(self) -> tuple[float, float, float]:
        model = self.model()
        loss, accuracy = self.loss_on(model, self.sample)
        with torch.no_grad():
            penalty = l2_penalty(model).item()
        return loss, accuracy, loss + self.settings.strong_l2 * penalty

    def overfit(self) -> Check:
        s = self.settings
        target = 0.05 * math.log(self.data.num_classes)
        tries = []
        for lr in self.overfit_lrs():
            tries.append(self._overfit_at(lr, target))
            if tries[-1][0] == 1.0 and tries[-1][1] <= target:
                break
        accuracy, loss, steps, start, lr = max(tries, key=lambda t: (t[0], -t[1]))
        ok = accuracy == 1.0 and loss <= target
        return Check(
            name="overfit",
            status=PASS if ok else FAIL,
            measured=f"train accuracy {accuracy:.0%}, loss {start:.3g} -> {loss:.3g} after "
            f"{steps} steps ({self.overfit_optimizer()} lr {lr:g}, no regularization, "
            f"{s.overfit_examples} examples)",
            expected=f"100% and loss <= {target:.3g} within {s.overfit_steps} steps",
            meaning="A model that cannot memorize 20 examples does not learn at all: frozen or "
            "detached parameters, an optimizer given the wrong parameters, or a broken loss.",
            hard=True,
            values={"accuracy": accuracy, "loss": loss, "steps": steps, "lr": lr},
        )

    def overfit_optimizer(self) -> str:
        """Plain SGD for an SGD trial; an Adam trial's own optimizer (without decay)."""
        return "SGD" if self.config.optimizer == "sgd" else self.config.optimizer

    def overfit_lrs(self) -> tuple[float, ...]:
        scale = 1.0 if self.config.optimizer == "sgd" else 0.1  # Adam's steps are larger
        return tuple(lr * scale for lr in self.settings.overfit_lrs)

    def _overfit_at(self, lr: float, target: float) -> tuple[float, float, int, float, float]:
        """Full batch, until 100% and ``target`` loss: (accuracy, loss, steps, first loss,
        lr)."""
        index = self.order[: self.settings.overfit_examples]
        x, y = self.train.x[index], self.train.y[index]
        model = self.model(dropout=0.0)
        if self.config.optimizer == "sgd":
            optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        else:
            optimizer = make_optimizer(self.config.replace(lr=lr, weight_decay=0.0), model)
        start, steps = math.nan, 0
        while steps < self.settings.overfit_steps:
            loss, accuracy = _step(model, optimizer, x, y)
            steps += 1
            start = loss if steps == 1 else start
            if not math.isfinite(loss) or (accuracy == 1.0 and loss <= target):
                break
        return accuracy, loss, steps, start, lr

    def probe(self, lr: float) -> tuple[Probe, nn.Module]:
        s = self.settings
        model = self.model()
        optimizer = make_optimizer(self.config.replace(lr=lr), model)
        weights = layer_weights(model)
        before, _ = self.loss_on(model, self.sample)
        n, size = len(self.order), self.config.batch_size
        losses: list[float] = []
        ratios: dict[str, list[float]] = {k: [] for k in weights}
        verdict, ema = LEARNS, math.nan
        for b in range(s.probe_steps):
            index = self.order[torch.arange(b * size, (b + 1) * size) % n]
            old = {k: w.detach().clone() for k, w in weights.items()} if b < s.ratio_steps else {}
            loss, _ = _step(model, optimizer, self.train.x[index], self.train.y[index])
            for k, w in old.items():
                ratios[k].append(
                    float((weights[k].detach() - w).norm() / w.norm().clamp_min(1e-12))
                )
            losses.append(loss)
            ema = loss if math.isnan(ema) else LOSS_EMA * ema + (1 - LOSS_EMA) * loss
            if not math.isfinite(loss) or ema > self.config.divergence_factor * losses[0]:
                verdict = EXPLODES
                break
        after = self.loss_on(model, self.sample)[0] if verdict == LEARNS else math.nan
        if verdict == LEARNS and not after <= before:
            verdict = EXPLODES
        elif verdict == LEARNS and (before - after) / before < s.min_fall:
            verdict = TOO_LOW
        median = {k: statistics.median(v) for k, v in ratios.items() if v}
        return Probe(lr, verdict, losses, before, after, median), model

    def probe_all(self) -> tuple[list[Probe], nn.Module | None]:
        probes, best, best_after = [], None, math.inf
        for lr in self.settings.probe_lrs:
            probe, model = self.probe(lr)
            probes.append(probe)
            if probe.verdict == LEARNS and probe.after < best_after:
                best, best_after = model, probe.after
        return probes, best

    def beats_chance(self, model: nn.Module | None) -> Check:
        n = min(len(self.data.val), self.settings.val_images)
        chance = _majority_share(self.data.val.labels)
        needed = chance + 3 * math.sqrt(chance * (1 - chance) / n)
        accuracy = math.nan
        if model is not None:
            val = device_split(self.data.val, self.data, self.runtime)
            _, accuracy, _ = evaluate(model, val.x[:n], val.y[:n], self.runtime)
        return Check(
            name="beats_chance",
            status=PASS if accuracy >= needed else FAIL,
            measured=(
                f"val accuracy {accuracy:.3f} after the best lr probe ({n} images)"
                if model is not None
                else "no lr learns, so no model to score"
            ),
            expected=f">= {needed:.3f} (majority class {chance:.3f} + 3 standard errors)",
            meaning="Validation accuracy at chance while the training loss falls means the "
            "labels do not match the images (shuffled or misaligned) or val is another task.",
            hard=True,
            values={"val_acc": accuracy, "chance": chance, "needed": needed},
        )


def _step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    """One training step; returns the loss and accuracy measured before it. A model whose loss
    needs no gradient (every parameter frozen) takes no step: that is a finding, not a crash."""
    model.train()
    logits = model(x).float()
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    if loss.requires_grad:
        loss.backward()
        optimizer.step()
    return loss.item(), (logits.argmax(dim=1) == y).float().mean().item()


def penalty_limit(config: TrialConfig, data: DataSplits, factor: float) -> float:
    """The l2 whose penalty at initialisation is ``factor`` x ln C: above it the penalty, not
    the data, drives training from the first step (seeded: a resumed study caps as before)."""
    model = build_model(config, data, torch.Generator().manual_seed(config.seed))
    weights = layer_weights(model)
    with torch.no_grad():
        squares = sum(float(w.square().sum()) for w in weights.values())
    return factor * math.log(data.num_classes) / max(squares, 1e-12)


def _majority_share(labels: np.ndarray) -> float:
    return float(np.bincount(labels).max() / len(labels))
