"""The trained model's insides, read from the final checkpoint: first-layer filters, the FC
layer's weights, activations on a fixed validation batch (the lecture's "good training: sparse
and uncorrelated"), and the test images it gets most confidently wrong. Any network: a view
that does not apply to it (no conv reads the image, no linear layer, no activation module)
says so in its place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from orchestrator.report.figures import OKABE_ITO, subplots
from trainables.config import TrialConfig
from trainables.datasets import DataSplits, load_data
from trainables.device import select_runtime
from trainables.errors import BabysitterError
from trainables.evaluation import device_split
from trainables.model import SeedCNN
from trainables.trial_state import build_model

ACTIVATIONS = (
    torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.GELU,
    torch.nn.SiLU, torch.nn.Mish, torch.nn.Hardswish, torch.nn.Tanh, torch.nn.Sigmoid,
)  # fmt: skip
SHOWN = 8  # activation histograms drawn (every one is measured for dead units)

BATCH = 256  # the fixed validation batch: its first images
WRONG = 16  # the most confidently wrong test images shown


@dataclass
class ModelViews:
    filters: Figure
    fc_weights: Figure
    activations: Figure
    wrong: Figure | None
    dead: dict[str, float]  # layer -> fraction of units silent on the whole batch


def model_views(
    final_dir: Path, config: dict, cache_dir: Path, data: DataSplits | None = None
) -> ModelViews:
    """The views of the model in ``final_dir`` on ``data`` (the study's, read from
    ``cache_dir`` when not given); one clear error when either cannot be read."""
    trial = TrialConfig(**config)
    checkpoint = final_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise BabysitterError(f"no final checkpoint in {str(final_dir)!r}")
    data = data if data is not None else load_data(trial, cache_dir)
    runtime = select_runtime("cpu", None)
    model = build_model(trial, data)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except RuntimeError as exc:  # cut short: torch's zip reader says so
        raise BabysitterError(f"{checkpoint} cannot be read ({str(exc)[:60]})") from None
    model.load_state_dict(state["model"])
    model.eval()
    batch = data.val if len(data.val) else data.test
    x = device_split(batch.take(np.arange(min(BATCH, len(batch)))), data, runtime).x
    activations = _activations(model, x)
    dead = {name: _dead_fraction(a) for name, a in activations.items()}
    return ModelViews(
        _filters(model),
        _fc_weights(model),
        _activation_figure(activations, dead),
        _wrong(model, data, runtime),
        dead,
    )


def _note(title: str, text: str) -> Figure:
    """A view that does not apply to this network, saying why in its place."""
    figure, ax = subplots(figsize=(6, 1.2))
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.axis("off")
    ax.set_title(title)
    return figure


def _first(model: torch.nn.Module, kind: type) -> tuple[str, torch.nn.Module] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, kind)), None)


def _filters(model: torch.nn.Module) -> Figure:
    """The first conv's filters, each scaled to 0..1, tiled into one image (one axes draws
    fast): what the network looks for in the pixels."""
    first = _first(model, torch.nn.Conv2d)
    if first is None or first[1].weight.shape[1] not in (1, 3):
        return _note("First-layer filters", "No conv layer reads the image: no filters to show.")
    weights = first[1].weight.detach().float()
    count, channels = weights.shape[:2]
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    tiles = ((weights - low) / (high - low + 1e-12)).permute(0, 2, 3, 1).numpy()
    mosaic = _mosaic(tiles, columns=8)
    figure, ax = subplots(figsize=(6, 0.75 * math.ceil(count / 8) + 0.6))
    ax.imshow(mosaic if channels == 3 else mosaic[..., 0], cmap="gray", interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"First-layer filters ({count}, {channels} channel(s), each scaled to 0..1)")
    return figure


def _mosaic(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """NHWC tiles in a grid, ``gap`` pixels of white between them."""
    count, height, width, channels = tiles.shape
    rows = math.ceil(count / columns)
    grid = np.ones((rows * (height + gap) - gap, columns * (width + gap) - gap, channels))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (height + gap) : r * (height + gap) + height, c * (width + gap) :][:, :width] = (
            tile
        )
    return grid


def _fc_weights(model: torch.nn.Module) -> Figure:
    """The first linear layer's weights as a matrix (units x inputs): it reads features, not
    pixels; smooth, structured rows are trained, salt-and-pepper ones are noise."""
    first = _first(model, torch.nn.Linear)
    if first is None:
        return _note("First linear layer", "The network has no linear layer.")
    name = "fc1" if isinstance(model, SeedCNN) else first[0]
    weights = first[1].weight.detach().float().numpy()
    figure, ax = subplots(figsize=(9, 3))
    limit = float(np.abs(weights).max()) or 1.0
    image = ax.imshow(weights, aspect="auto", cmap="PuOr", vmin=-limit, vmax=limit)
    ax.set_xlabel("input")
    ax.set_ylabel(f"{name} unit")
    ax.set_title(f"{name} weights (the first linear layer)")
    figure.colorbar(image, ax=ax, label="weight")
    return figure


def _activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each activation module's output on the batch (its last call), in the order they ran:
    the seed CNN's named relu1.., any other network's by module path."""
    captured: dict[str, torch.Tensor] = {}
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, ACTIVATIONS)]
    seed = isinstance(model, SeedCNN)
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=f"relu{k + 1}" if seed else path: captured.__setitem__(
                name, out.detach()
            )
        )
        for k, (path, module) in enumerate(found)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _dead_fraction(activation: torch.Tensor) -> float:
    """Units (channels of a conv layer, neurons of an FC one) that are 0 on every input."""
    per_unit = activation.transpose(0, 1).reshape(activation.shape[1], -1)
    return float((per_unit.max(dim=1).values <= 0).float().mean())


def _activation_figure(activations: dict[str, torch.Tensor], dead: dict[str, float]) -> Figure:
    if not activations:
        return _note(
            "Activations",
            "No activation modules ran (activations called as functions cannot be hooked).",
        )
    names = list(activations)
    if len(names) > SHOWN:  # the first, the last and evenly between
        names = [names[round(i * (len(names) - 1) / (SHOWN - 1))] for i in range(SHOWN)]
    figure, axes = subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.2))
    for ax, name, colour in zip(axes, names, OKABE_ITO, strict=False):
        values = activations[name].flatten().numpy()
        ax.hist(values, bins=40, color=colour, log=True)
        zero = float((values <= 0).mean())
        ax.set_title(f"{name}: {zero:.0%} zero, {dead[name]:.0%} dead", fontsize=9)
        ax.set_xlabel("activation")
        ax.set_ylabel("count (log)")
    last = activations[names[-1]]
    units = last.reshape(last.shape[0], -1).numpy()
    live = units[:, units.std(axis=0) > 0]
    correlation = np.corrcoef(live.T) if live.shape[1] > 1 else np.zeros((1, 1))
    image = axes[-1].imshow(np.nan_to_num(correlation), cmap="PuOr", vmin=-1, vmax=1)
    off = (
        np.abs(correlation[~np.eye(len(correlation), dtype=bool)]) if len(correlation) > 1 else [0]
    )
    axes[-1].set_title(f"{names[-1]} unit correlation (mean |r| {np.nanmean(off):.2f})", fontsize=9)
    axes[-1].set_xlabel("unit")
    figure.colorbar(image, ax=axes[-1])
    shown = "" if len(names) == len(activations) else f"; {len(names)} of {len(activations)} shown"
    figure.suptitle(f"Activations on a fixed validation batch ({units.shape[0]} images{shown})")
    return figure


def _wrong(model: torch.nn.Module, data: DataSplits, runtime) -> Figure | None:
    """The wrong test images, most confident first, tiled into one image with their labels."""
    if not len(data.test):
        return None
    test = device_split(data.test, data, runtime)
    with torch.no_grad():
        probabilities = torch.softmax(model(test.x).float(), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != test.y).flatten()
    if not len(wrong):
        return None
    order = wrong[torch.argsort(confidence[wrong], descending=True)][:WRONG].tolist()
    images = data.test.images[order].transpose(0, 2, 3, 1) / 255.0
    columns = min(8, len(order))
    gap = max(2, images.shape[1] // 3)
    mosaic = _mosaic(images, columns, gap)
    rows = math.ceil(len(order) / columns)
    figure, ax = subplots(figsize=(1.5 * columns, 1.8 * rows + 0.5))
    ax.imshow(mosaic if mosaic.shape[-1] == 3 else mosaic[..., 0], cmap="gray")
    names, (height, width) = data.class_names, images.shape[1:3]
    for k, i in enumerate(order):
        r, c = divmod(k, columns)
        ax.text(
            c * (width + gap),
            r * (height + gap) + height + gap * 0.9,
            f"{names[int(test.y[i])]} -> {names[int(predicted[i])]} {float(confidence[i]):.2f}",
            fontsize=6,
        )
    ax.axis("off")
    ax.set_title(
        f"Most confidently wrong test images ({len(wrong)} wrong in all): true -> predicted, "
        "confidence",
        fontsize=9,
    )
    return figure
