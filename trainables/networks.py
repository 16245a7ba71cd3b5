"""The network a trial trains, named by the spec's ``model``: ``seed-cnn`` (the seed report's
CNN), ``torchvision.<name>`` (a torchvision classifier, trained from scratch), or a factory of
the user's, ``package.module:factory`` or ``path/to/file.py:factory``, called as
``factory(in_channels, num_classes, image_size, **arch)``. Everything else in babysitter (the
L2 penalty, update ratios, sanity checks, report views) sees a plain ``nn.Module`` through
``layer_weights``; a bad factory is one line before anything trains."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.config import SEED_CNN
from trainables.errors import ConfigError
from trainables.model import SeedCNN

TORCHVISION = "torchvision."
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # what L2 and update ratios cover
FIX = "a callable (in_channels, num_classes, image_size, **arch) -> nn.Module"


def build_network(
    model: str,
    arch: dict[str, Any],
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> nn.Module:
    """The network ``model`` names, with fresh weights (drawn from ``generator`` for the seed
    CNN; a user's factory and torchvision draw from torch's global generator, seeded first)."""
    if model == SEED_CNN:
        return SeedCNN(in_channels, num_classes, image_size, **arch, generator=generator)
    if generator is not None:
        torch.manual_seed(int(generator.initial_seed()))
    if model.startswith(TORCHVISION):
        return _torchvision(model, arch, in_channels, num_classes)
    factory = load_factory(model)
    try:
        network = factory(in_channels, num_classes, tuple(image_size), **arch)
    except TypeError as exc:
        raise ConfigError(
            f"model {model!r} cannot be called with (in_channels, num_classes, image_size"
            f"{''.join(f', {k}=' for k in arch)}): {exc}; make it {FIX}"
        ) from None
    if not isinstance(network, nn.Module):
        raise ConfigError(
            f"model {model!r} returned a {type(network).__name__}, not a torch nn.Module; "
            f"make it {FIX}"
        )
    return network


def load_factory(model: str) -> Callable[..., Any]:
    """``package.module:factory`` or ``path/to/file.py:factory``, imported."""
    where, _, name = model.rpartition(":")
    if not where or not name:
        raise ConfigError(
            f"model {model!r} is not seed-cnn, torchvision.<name>, package.module:factory or "
            "path/to/file.py:factory; write one of those"
        )
    try:
        module = _from_file(model, Path(where)) if where.endswith(".py") else _module(model, where)
    except ConfigError:
        raise
    except Exception as exc:  # the user's module raised while it was imported
        raise ConfigError(
            f"model {model!r}: importing {where} failed ({type(exc).__name__}: {exc}); fix it"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(
            f"model {model!r}: {where} has no callable {name!r} (it has {', '.join(found[:8])}); "
            "name the factory after the colon"
        )
    return factory


def _module(model: str, name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not name.startswith(exc.name):  # the module imports what is missing
            raise
        raise ConfigError(
            f"model {model!r}: no module {exc.name!r} to import; install it or give the "
            "path of its .py file (path/to/file.py:factory)"
        ) from None


def _from_file(model: str, path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(
            f"model {model!r}: no such file; give the path of the .py file that defines the "
            "factory (absolute, or relative to where babysit runs)"
        )
    name = "babysit_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _torchvision(model: str, arch: dict[str, Any], in_channels: int, classes: int) -> nn.Module:
    from torchvision import models

    name = model.removeprefix(TORCHVISION)
    known = models.list_models(module=models)
    if name not in known:
        raise ConfigError(
            f"model {model!r}: torchvision has no classifier {name!r}; e.g. "
            "torchvision.resnet18, torchvision.mobilenet_v3_small"
        )
    network = models.get_model(name, weights=None, num_classes=classes, **arch)
    return network if in_channels == 3 else nn.Sequential(GreyToRGB(in_channels), network)


class GreyToRGB(nn.Module):
    """Grey images into a torchvision network that reads three channels: the channel repeated
    (the first conv then sees what it would on a grey photo)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels != 1:
            raise ConfigError(
                f"torchvision models read 3 channels and these images have {channels}; "
                "use a factory of your own for them"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


def layer_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Each conv and linear layer's weight by name: the tensors the L2 penalty and the update
    ratios cover (not biases, not norms). The seed CNN keeps its names (conv1..fc2); any other
    network's layers go by their module path (``layer1.0.conv1``)."""
    if isinstance(model, SeedCNN):
        return model.layer_weights()
    return {
        name: module.weight
        for name, module in model.named_modules()
        if isinstance(module, WEIGHTED) and module.weight.requires_grad
    }


def check_network(
    model: str, network: nn.Module, in_channels: int, num_classes: int, image_size: tuple
) -> None:
    """A batch of two blank images through ``network`` in training mode: it must give
    ``[2, num_classes]`` logits; one line naming what it did instead."""
    x = torch.zeros(2, in_channels, *image_size)
    try:
        out = network.train()(x)
    except Exception as exc:
        raise ConfigError(
            f"model {model!r} raised on a batch of 2 images of {in_channels}x{image_size[0]}x"
            f"{image_size[1]} ({type(exc).__name__}: {str(exc)[:200]}); it must take [N, C, H, "
            "W] images of this data set"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model {model!r} gave {shape} for a batch of 2 images; it must give logits of "
            f"shape [N, num_classes] = [2, {num_classes}]"
        )
