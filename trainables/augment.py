"""The seed's augmentation (Keras ImageDataGenerator: rotation 10 deg, shifts 0.1, shear 0.1,
zoom 0.1, horizontal flip, reflect fill) as one batched affine warp on the training device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    rotation_deg: float = 10.0
    shift: float = 0.1
    shear: float = 0.1
    zoom: float = 0.1
    hflip: bool = True


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, spec: AugmentSpec = AugmentSpec()
) -> torch.Tensor:
    """Random affine per image; randomness comes from ``generator`` (on the batch's device) so
    runs are reproducible and resumable from a checkpoint."""
    n = x.shape[0]
    u = torch.rand(n, 6, generator=generator, device=generator.device) * 2 - 1
    angle = u[:, 0] * math.radians(spec.rotation_deg)
    tx, ty = u[:, 1] * spec.shift * 2, u[:, 2] * spec.shift * 2
    shear = u[:, 3] * spec.shear
    zoom = 1 + u[:, 4] * spec.zoom
    flip = torch.where((u[:, 5] > 0) & spec.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * zoom * flip, (-sin + shear * cos) * zoom, tx], dim=1),
            torch.stack([sin * zoom * flip, (cos + shear * sin) * zoom, ty], dim=1),
        ],
        dim=1,
    ).to(dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
