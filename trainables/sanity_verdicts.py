"""What the sanity checks' measurements mean: each check's verdict (pass, warn, fail), the
lines a person reads (measured, expected, what a failure means), and the lr range the probe
proposes. Pure functions of numbers the measurements in ``trainables.sanity`` return."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import torch

from trainables.datasets import DataSplits
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
)


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


def check_initial_loss(
    loss: float, accuracy: float, classes: int, chance: float, n: int, tolerance: float
) -> Check:
    """``loss`` and ``accuracy`` of the untrained model on ``n`` images of ``classes``
    classes, where always guessing the largest class scores ``chance``."""
    expected = math.log(classes)
    off = abs(loss - expected) / expected if math.isfinite(loss) else math.inf
    status = PASS if off <= tolerance else WARN if off <= 5 * tolerance else FAIL
    near_chance = accuracy <= chance + 3 * math.sqrt(chance * (1 - chance) / n)
    if status == PASS and not near_chance:
        status = WARN
    return Check(
        name="initial_loss",
        status=status,
        measured=f"loss {loss:.4f}, accuracy {accuracy:.3f} at init, no regularization",
        expected=f"ln({classes}) = {expected:.4f} +- {tolerance:.0%}; accuracy "
        f"near chance ({chance:.3f})",
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


def decades(low: float = 1e-7, high: float = 10.0) -> tuple[float, ...]:
    """Learning rates a decade apart covering ``[low, high]``."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return tuple(10.0**k for k in range(first, last + 1))


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
