"""The babysitting preflight of the seed recipe (../shared/seeds): before a search spends
compute, check that the inputs are zero-centered, the loss starts at ln(C), regularization
raises it, 20 examples can be overfit, and find the learning rates where the loss falls
without exploding. Pure torch; the orchestrator prints, saves and records what this returns."""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.device import Runtime, select_runtime
from trainables.sanity_report import (
    EXPLODES,
    FAIL,
    LEARNS,
    PASS,
    RATIO_RANGE,
    TOO_LOW,
    WARN,
    Check,
    Probe,
    SanityReport,
    SanitySettings,
)
from trainables.train import (
    LOSS_EMA,
    device_split,
    evaluate,
    l2_penalty,
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
            checks.append(check_initial_loss(loss, accuracy, bench, settings.loss_tolerance))
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
        for lr in s.overfit_lrs:
            tries.append(self._overfit_at(lr, target))
            if tries[-1][0] == 1.0 and tries[-1][1] <= target:
                break
        accuracy, loss, steps, start, lr = max(tries, key=lambda t: (t[0], -t[1]))
        ok = accuracy == 1.0 and loss <= target
        return Check(
            name="overfit",
            status=PASS if ok else FAIL,
            measured=f"train accuracy {accuracy:.0%}, loss {start:.3g} -> {loss:.3g} after "
            f"{steps} steps (SGD lr {lr:g}, no regularization, {s.overfit_examples} examples)",
            expected=f"100% and loss <= {target:.3g} within {s.overfit_steps} steps",
            meaning="A model that cannot memorize 20 examples does not learn at all: frozen or "
            "detached parameters, an optimizer given the wrong parameters, or a broken loss.",
            hard=True,
            values={"accuracy": accuracy, "loss": loss, "steps": steps, "lr": lr},
        )

    def _overfit_at(self, lr: float, target: float) -> tuple[float, float, int, float, float]:
        """Plain SGD, full batch, until 100% and ``target`` loss: (accuracy, loss, steps,
        first loss, lr)."""
        index = self.order[: self.settings.overfit_examples]
        x, y = self.train.x[index], self.train.y[index]
        model = self.model(dropout=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
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
        weights = model.layer_weights() if hasattr(model, "layer_weights") else {}
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


def check_data(data: DataSplits, sample: torch.Tensor) -> Check:
    """Normalized training images centered and scaled, finite, classes balanced enough, no
    image in two splits. Problems here slow a search down or flatter it; they warn."""
    mean = sample.mean(dim=(0, 2, 3)).tolist()
    std = sample.std(dim=(0, 2, 3)).tolist()
    finite = bool(torch.isfinite(sample).all())
    counts = np.bincount(data.train.labels, minlength=data.num_classes)
    balance = counts.min() / counts.max()
    shared = _shared_images(data)
    problems = []
    if not all(abs(m) <= 0.1 for m in mean) or not all(abs(s - 1) <= 0.1 for s in std):
        problems.append(
            "inputs are not zero-centered and scaled (the preprocessing step is missing or "
            "uses other statistics), which slows training and skews the lr search"
        )
    if not finite:
        problems.append("NaN or inf pixels poison every gradient")
    if balance < 0.2:
        problems.append("accuracy flatters a model that favours the large class")
    if shared:
        problems.append("images in both train and val/test inflate the scores")
    means = ", ".join(f"{m:+.2f}" for m in mean)
    stds = ", ".join(f"{s:.2f}" for s in std)
    sizes = f"{len(data.train)}/{len(data.val)}/{len(data.test)}"
    return Check(
        name="data",
        status=WARN if problems else PASS,
        measured=f"mean {means}, std {stds}; {'finite' if finite else 'NOT finite'}; smallest/"
        f"largest class {balance:.2f}; train/val/test {sizes}; {shared} val/test images also "
        "in train",
        expected="mean 0 +- 0.1, std 1 +- 0.1 per channel; finite; class ratio >= 0.2; 0 shared",
        meaning="; ".join(problems).capitalize() + "."
        if problems
        else "Unnormalized inputs slow training, imbalance flatters accuracy, shared images "
        "inflate the scores.",
        hard=False,
        values={
            **{f"mean_{i}": m for i, m in enumerate(mean)},
            **{f"std_{i}": s for i, s in enumerate(std)},
            "class_balance": float(balance),
            "shared_images": float(shared),
        },
    )


def check_initial_loss(loss: float, accuracy: float, bench: _Bench, tolerance: float) -> Check:
    expected = math.log(bench.data.num_classes)
    off = abs(loss - expected) / expected if math.isfinite(loss) else math.inf
    status = PASS if off <= tolerance else WARN if off <= 5 * tolerance else FAIL
    n = len(bench.sample)
    near_chance = accuracy <= bench.chance + 3 * math.sqrt(bench.chance * (1 - bench.chance) / n)
    if status == PASS and not near_chance:
        status = WARN
    return Check(
        name="initial_loss",
        status=status,
        measured=f"loss {loss:.4f}, accuracy {accuracy:.3f} at init, no regularization",
        expected=f"ln({bench.data.num_classes}) = {expected:.4f} +- {tolerance:.0%}; accuracy "
        f"near chance ({bench.chance:.3f})",
        meaning="An initial loss far from ln(C) means the logits are badly scaled at init (a "
        "wrong init or an extra scale factor) or the loss is wrong; accuracy above chance at "
        "init means labels leak into the inputs.",
        hard=True,
        values={"loss": loss, "expected": expected, "accuracy": accuracy},
    )


def check_regularization(loss: float, regularized: float, strength: float) -> Check:
    ok = regularized >= 2 * loss
    return Check(
        name="regularization",
        status=PASS if ok else WARN,
        measured=f"loss {regularized:.4g} with l2={strength:g} vs {loss:.4f} without",
        expected="far above (>= 2x)",
        meaning="If a strong penalty does not raise the loss, the penalty never reaches the "
        "loss (or the weights are all zero), so searching l2 does nothing.",
        hard=False,
        values={"loss": loss, "regularized": regularized, "l2": strength},
    )


def check_lr_probe(probes: list[Probe], lr_range: tuple[float, float] | None) -> Check:
    verdicts = "; ".join(
        f"{verdict} {_lrs(p.lr for p in probes if p.verdict == verdict)}"
        for verdict in (TOO_LOW, LEARNS, EXPLODES)
        if any(p.verdict == verdict for p in probes)
    )
    proposed = f"; proposed lr range [{lr_range[0]:.0e}, {lr_range[1]:.0e}]" if lr_range else ""
    steps = len(probes[0].losses) if probes else 0
    return Check(
        name="lr_probe",
        status=PASS if lr_range else FAIL,
        measured=verdicts + proposed,
        expected=f"the loss falls >= 1% without exploding at some lr ({steps} steps each)",
        meaning="When no learning rate makes the loss fall, the model does not train at all "
        "(frozen weights, a detached loss, labels that carry no signal).",
        hard=True,
        values=(
            {"lr_low": lr_range[0], "lr_high": lr_range[1]} if lr_range else {"lr_low": math.nan}
        ),
    )


def check_update_ratio(probes: list[Probe]) -> Check:
    """The lecture's rule of thumb: updates about 1e-3 of the weights. Shown at the learning
    rate, among those that learn, whose updates come closest to it."""
    learning = [p for p in probes if p.verdict == LEARNS and p.ratios]
    probe = min(learning, key=_distance_from_rule) if learning else None
    low, high = RATIO_RANGE
    ratios = probe.ratios if probe else {}
    outside = [k for k, r in ratios.items() if not low <= r <= high]
    shown = ", ".join(f"{k} {r:.1e}" for k, r in ratios.items())
    return Check(
        name="update_ratio",
        status=PASS if ratios and not outside else WARN,
        measured=f"at lr {probe.lr:g}: {shown}" if probe else "no lr learns",
        expected=f"about 1e-3 per layer ({low:g} ... {high:g}) at some lr that learns",
        meaning="Updates far above 1e-3 of the weights make training unstable, far below make "
        "it crawl; when no lr suits every layer, "
        + (", ".join(outside) if outside else "some layers")
        + " are badly scaled at init.",
        hard=False,
        values={
            "lr": probe.lr if probe else math.nan,
            **{f"ratio/{k}": r for k, r in ratios.items()},
        },
    )


def _distance_from_rule(probe: Probe) -> float:
    logs = [math.log10(max(r, 1e-30)) for r in probe.ratios.values()]
    return abs(sum(logs) / len(logs) + 3)


def propose_range(probes: list[Probe]) -> tuple[float, float] | None:
    """From the lowest learning rate that learns to the highest that does, at least two
    decades wide: the coarse search's range (the lecture's rough [1e-7 ... 1e-3])."""
    learning = [p.lr for p in probes if p.verdict == LEARNS]
    if not learning:
        return None
    high = max(learning)
    return min(min(learning), high / 100), high


def explodes_above(probes: list[Probe]) -> float | None:
    """The lowest probed lr that explodes above every lr that learns: what widening may not
    pass (None when no such lr was probed)."""
    learning = [p.lr for p in probes if p.verdict == LEARNS]
    top = max(learning, default=0.0)
    exploding = [p.lr for p in probes if p.verdict == EXPLODES and p.lr > top]
    return min(exploding, default=None)


def penalty_limit(config: TrialConfig, data: DataSplits, factor: float) -> float:
    """The l2 whose penalty at initialisation is ``factor`` x ln C: above it the penalty, not
    the data, drives training from the first step (seeded: a resumed study caps as before)."""
    model = build_model(config, data, torch.Generator().manual_seed(config.seed))
    weights = model.layer_weights() if hasattr(model, "layer_weights") else {}
    with torch.no_grad():
        squares = sum(float(w.square().sum()) for w in weights.values())
    return factor * math.log(data.num_classes) / max(squares, 1e-12)


def decades(low: float = 1e-7, high: float = 10.0) -> tuple[float, ...]:
    """Learning rates a decade apart covering ``[low, high]``."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return tuple(10.0**k for k in range(first, last + 1))


def _majority_share(labels: np.ndarray) -> float:
    return float(np.bincount(labels).max() / len(labels))


def _shared_images(data: DataSplits) -> int:
    seen = {_digest(image) for image in data.train.images}
    return sum(_digest(image) in seen for split in (data.val, data.test) for image in split.images)


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def _lrs(values: Iterable[float]) -> str:
    values = sorted(values)
    if len(values) == 1:
        return f"{values[0]:.0e}"
    return f"{values[0]:.0e}..{values[-1]:.0e}"
