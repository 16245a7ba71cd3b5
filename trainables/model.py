"""The seed's small CNN: 3 x [conv 3x3 + ReLU + 2x2 max-pool] -> FC 128 -> classes."""

from __future__ import annotations

import torch
from torch import nn

from trainables.errors import ConfigError

BASE_FILTERS = (32, 64, 128)
HIDDEN = 128


class SeedCNN(nn.Module):
    """Keras' defaults (Glorot-uniform weights, zero biases) unless ``he_init``, so the initial
    loss matches the seed report's ln(C) check."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        *,
        batch_norm: bool = False,
        he_init: bool = False,
        dropout: float = 0.0,
        width: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if min(image_size) < 8:
            raise ConfigError(
                f"invalid image size {image_size[0]}x{image_size[1]}: the seed CNN halves it "
                "three times, so each side must be >= 8 pixels"
            )
        filters = [max(1, round(f * width)) for f in BASE_FILTERS]
        hidden = max(1, round(HIDDEN * width))
        blocks: list[nn.Module] = []
        channels = in_channels
        for f in filters:
            blocks.append(nn.Conv2d(channels, f, 3, padding=1))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(f))
            blocks += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = f
        self.features = nn.Sequential(*blocks)
        flat = channels * (image_size[0] // 8) * (image_size[1] // 8)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            Dropout(dropout),
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                if he_init:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                else:
                    nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def use_generator(self, generator: torch.Generator) -> None:
        """Draw dropout masks from the trial's own generator (it must live on the model's
        device), so trials sharing a process never share random state."""
        for module in self.modules():
            if isinstance(module, Dropout):
                module.generator = generator

    def layer_weights(self) -> dict[str, nn.Parameter]:
        """conv1..convN, fc1, fc2 -> weight: the tensors the L2 penalty and update ratios use."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        named = {f"conv{i + 1}": m.weight for i, m in enumerate(convs)}
        named.update({f"fc{i + 1}": m.weight for i, m in enumerate(fcs)})
        return named


class Dropout(nn.Module):
    """Inverted dropout like ``nn.Dropout``, with masks from a given generator (torch's own
    dropout takes only the process-wide one)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device, generator=self.generator) >= self.p
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
