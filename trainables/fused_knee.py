"""How many trials to fuse on this device: images/s of stacks of 1, 2, 4, ... members on the
trainable's own step, doubling K while it pays (HFTA's rule of thumb, measured instead of
guessed: a small network is launch-bound, and the gain flattens once the chip is busy or its
memory full)."""

from __future__ import annotations

import time
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.device import Runtime, select_runtime
from trainables.epoch import gradients
from trainables.evaluation import device_split
from trainables.fused import FusedModels
from trainables.networks import layer_weights
from trainables.trial_state import TrialState

GAIN = 1.10  # double K while images/s grows by at least this factor


def sample_batches(data: DataSplits, runtime: Runtime, size: int, steps: int) -> list:
    """``steps`` training batches drawn once, resident on the device."""
    train = device_split(data.train, data, runtime)
    g = torch.Generator(device=runtime.device).manual_seed(0)
    picks = torch.randint(len(train.y), (steps, size), generator=g, device=runtime.device)
    return [(train.x[i].contiguous(memory_format=runtime.memory_format), train.y[i]) for i in picks]


def sync(runtime: Runtime) -> None:
    if runtime.is_cuda:
        torch.cuda.synchronize()


def trial_seconds(
    config: TrialConfig, data: DataSplits, runtime: Runtime, work: list, barrier: Any = None
) -> float:
    """Seconds for the trainable's step over ``work`` (after two warm-up steps and, in a
    process of its own, once all the processes are ready)."""
    state = TrialState.create(config, data, runtime)
    weights = list(layer_weights(state.model).values())

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        state.optimizer.zero_grad(set_to_none=True)
        gradients(state.model, weights, x, y, config.l2, runtime)
        state.optimizer.step()

    for x, y in work[:2]:
        step(x, y)
    sync(runtime)
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for x, y in work:
        step(x, y)
    sync(runtime)
    return time.perf_counter() - start


def stack_seconds(configs: list[TrialConfig], data: DataSplits, runtime: Runtime, work) -> float:
    """Seconds for one fused step per batch of ``work``, after two warm-up steps."""
    group = FusedModels([TrialState.create(c, data, runtime) for c in configs], runtime)
    for x, y in work[:2]:
        group.step(x, y)
    sync(runtime)
    start = time.perf_counter()
    for x, y in work:
        group.step(x, y)
    sync(runtime)
    return time.perf_counter() - start


def knee(
    config: TrialConfig, data: DataSplits, most: int, steps: int = 30
) -> tuple[int, dict[int, float]]:
    """The group size for trials like ``config`` on this device, and the member-images/s of
    every K measured: K doubles from 1 (one trial unfused) while images/s grows by ``GAIN``, up
    to ``most`` or until a stack does not fit in memory."""
    runtime = select_runtime(config.device, config.threads)
    work = sample_batches(data, runtime, config.batch_size, steps)
    figures: dict[int, float] = {}
    chosen, k = 1, 1
    while k <= most:
        members = [config.replace(seed=config.seed + i) for i in range(k)]
        try:  # K = 1 is a trial as it trains unfused
            seconds = (
                trial_seconds(config, data, runtime, work)
                if k == 1
                else stack_seconds(members, data, runtime, work)
            )
            figures[k] = k * steps * config.batch_size / seconds
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        if k > 1:
            if figures[k] < GAIN * figures[k // 2]:
                break
            chosen = k
        k *= 2
    return chosen, figures
