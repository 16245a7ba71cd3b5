"""One trial's state between two epochs: the model, its optimizer, its own random generator and
the loss average the divergence guard keeps. It saves and loads itself, so a trial resumes
exactly, and holds no process-wide state, so several trials can share one process."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import SEED_CNN, SEED_KNOBS, TrialConfig
from trainables.datasets import DataSplits
from trainables.device import Runtime
from trainables.model import SeedCNN
from trainables.networks import build_network, check_network


def model_args(config: TrialConfig, data: DataSplits) -> dict[str, Any]:
    """What the model is built from, kept in every checkpoint (as nanoGPT keeps its
    ``model_args``): whoever loads one rebuilds the model from it alone. The seed CNN's are
    its four knobs (as before there were others); any other network's, its name and arch."""
    shape = {
        "in_channels": data.channels,
        "num_classes": data.num_classes,
        "image_size": list(data.image_size),
    }
    if config.model == SEED_CNN:
        return {**shape, **{k: getattr(config, k) for k in SEED_KNOBS}}
    return {**shape, "model": config.model, "arch": dict(config.arch)}


def model_from(args: dict[str, Any], generator: torch.Generator | None = None) -> nn.Module:
    shape = [args["in_channels"], args["num_classes"], tuple(args["image_size"])]
    model = args.get("model", SEED_CNN)
    arch = args.get("arch") if model != SEED_CNN else {k: args[k] for k in SEED_KNOBS}
    return build_network(model, arch, *shape, generator=generator)


def build_model(
    config: TrialConfig, data: DataSplits, generator: torch.Generator | None = None
) -> nn.Module:
    return model_from(model_args(config, data), generator)


def check_model(config: TrialConfig, data: DataSplits) -> nn.Module:
    """The model ``config`` names, built for ``data`` and shown a batch: one line, before any
    training, when it cannot be built or does not give [N, classes] logits."""
    model = build_model(config, data, torch.Generator().manual_seed(config.seed))
    check_network(config.model, model, data.channels, data.num_classes, data.image_size)
    return model


def make_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
    )


@dataclass
class TrialState:
    config: TrialConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    initial_loss: float = math.nan
    loss_ema: float = math.nan
    initial_val_loss: float = math.nan
    model_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, config: TrialConfig, data: DataSplits, runtime: Runtime) -> TrialState:
        """Fresh weights from ``config.seed``; shuffling, augmentation and dropout draw from a
        generator on the training device, seeded from it too."""
        init = torch.Generator().manual_seed(config.seed)
        model = build_model(config, data, init)
        model = model.to(runtime.device, memory_format=runtime.memory_format)
        generator = torch.Generator(device=runtime.device).manual_seed(config.seed)
        if isinstance(model, SeedCNN):
            model.use_generator(generator)
        optimizer = make_optimizer(config, model)
        return cls(config, model, optimizer, generator, model_args=model_args(config, data))

    @classmethod
    def load(
        cls, path: Path, config: TrialConfig, data: DataSplits, runtime: Runtime
    ) -> TrialState:
        """The state saved in ``path``; refused in one line when it was written with other
        settings. Checkpoints of earlier versions (with the process-wide RNG state too) load."""
        return cls.restore(load_checkpoint(path, config.to_dict()), config, data, runtime)

    @classmethod
    def restore(
        cls, saved: dict[str, Any], config: TrialConfig, data: DataSplits, runtime: Runtime
    ) -> TrialState:
        """The state ``to_dict`` made, on ``runtime``'s device."""
        state = cls.create(config, data, runtime)
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        try:
            state.generator.set_state(saved["rng"]["generator"])
        except RuntimeError:  # a CPU generator's state resumed on a GPU: reseed per epoch
            state.generator.manual_seed(config.seed + saved["epoch"])
        state.epoch = saved["epoch"]
        state.history = list(saved["history"])
        state.initial_loss = saved["initial_loss"]
        state.loss_ema = saved["loss_ema"]
        state.initial_val_loss = saved.get("initial_val_loss", math.nan)
        return state

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model_args": self.model_args,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"generator": self.generator.get_state()},
            "history": self.history,
            "initial_loss": self.initial_loss,
            "loss_ema": self.loss_ema,
            "initial_val_loss": self.initial_val_loss,
        }
