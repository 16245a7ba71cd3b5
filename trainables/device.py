"""Where a trial runs: CUDA when present, else CPU threads. Both train in channels_last and, where
the chip has bf16 matrix units (any CUDA GPU; a CPU with AMX tiles), under bf16 autocast: on this
project's 2-core Xeon that pair trains the seed CNN 2.4-3x faster than fp32 NCHW
(scripts/bench_train.py --formats)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from trainables.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool = False
    memory_format: torch.memory_format = torch.channels_last

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def cpu_has_bf16_units() -> bool:
    """AMX tiles make bf16 convolutions fast; without them bf16 on a CPU is slower than fp32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def select_runtime(device: str, threads: int | None) -> Runtime:
    """Resolve ``auto`` and apply the thread count (process-wide: one trial per process)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("invalid device='cuda': no CUDA device is visible; use auto or cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads is not None:
        torch.set_num_threads(threads)
    return Runtime(torch.device(device), bf16=device == "cuda" or cpu_has_bf16_units())
