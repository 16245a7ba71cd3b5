"""Where a trial runs: CUDA when present (bf16 autocast, channels_last), else CPU threads."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from trainables.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.is_cuda else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def select_runtime(device: str, threads: int | None) -> Runtime:
    """Resolve ``auto`` and apply the thread count (process-wide: one trial per process)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("invalid device='cuda': no CUDA device is visible; use auto or cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads is not None:
        torch.set_num_threads(threads)
    return Runtime(torch.device(device))
