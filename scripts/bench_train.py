"""Training throughput of babysitter's loop vs a minimal hand-written PyTorch loop.

Same model, data, batch size, device and thread count, in one process, alternating short rounds
(this machine's speed drifts by 10 % within a minute); prints the median images/s of each, their
ratio (ours / plain) and the median of the rounds' ratios. On CUDA the loops keep the data on
the GPU and train in bf16 autocast with channels_last, and a third replays the plain loop's step
as a CUDA graph (what a single trial could run at the chip's speed).
With --formats it instead times the plain loop in fp32 NCHW (what a CPU trial ran before)
against channels_last, and channels_last under bf16 autocast (what a trial runs where the chip
has bf16 units), for the seed CNN's width 1 and 2, with and without batch norm.
Run: .venv/bin/python scripts/bench_train.py [--device cuda] [--formats]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.config import TrialConfig
from trainables.datasets import DataSplits, default_cache_dir, load_data
from trainables.device import Runtime, select_runtime
from trainables.evaluation import device_split
from trainables.train import train as babysitter_train
from trainables.trial_state import build_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"faces": DATA / "cbcl-faces.tar.gz", "cifar10": DATA / "cifar10-jpg.tar.gz"}


def plain_loop(config: TrialConfig, data: DataSplits, runtime: Runtime | None = None) -> float:
    """The loop a practitioner writes by hand: pre-normalized tensors on the device, SGD,
    cross-entropy, no metrics, no checks."""
    runtime = runtime or select_runtime(config.device, config.threads)
    model = build_model(config, data).to(runtime.device, memory_format=runtime.memory_format)
    opt = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=2 * config.l2
    )
    train_split = device_split(data.train, data, runtime)
    x_all, y_all = train_split.x, train_split.y
    seen, start = 0, time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(y_all), device=runtime.device)
        for i in range(0, len(y_all), config.batch_size):
            index = order[i : i + config.batch_size]
            with runtime.autocast():
                logits = model(x_all[index].contiguous(memory_format=runtime.memory_format))
            loss = F.cross_entropy(logits.float(), y_all[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(index)
    if runtime.is_cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def graphed_loop(config: TrialConfig, data: DataSplits) -> float:
    """The plain loop's step captured once as a CUDA graph and replayed per batch (PyTorch's
    whole-network capture): each batch is copied into static inputs and one replay launches
    every kernel of the step, so a small net is no longer bound by Python and launches. Full
    batches only (a graph's shapes are fixed). CUDA only."""
    runtime = select_runtime(config.device, config.threads)
    model = build_model(config, data).to(runtime.device, memory_format=runtime.memory_format)
    opt = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=2 * config.l2
    )
    train_split = device_split(data.train, data, runtime)
    x_all, y_all = train_split.x, train_split.y
    size = config.batch_size
    static_x = x_all[:size].contiguous(memory_format=runtime.memory_format).clone()
    static_y = y_all[:size].clone()

    def step() -> None:
        with runtime.autocast():
            logits = model(static_x)
        F.cross_entropy(logits.float(), static_y).backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: allocator, cuDNN, momentum buffers
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    full = len(y_all) // size * size
    seen, start = 0, time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(y_all), device=runtime.device)
        for i in range(0, full, size):
            index = order[i : i + size]
            static_x.copy_(x_all[index])
            static_y.copy_(y_all[index])
            graph.replay()
            seen += size
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def ours(config: TrialConfig, data: DataSplits) -> float:
    """Images/s over the training passes, as the loop reports them (validation excluded)."""
    history = babysitter_train(config, data).history
    train_seconds = sum(len(data.train) / row["images_per_s"] for row in history)
    return len(history) * len(data.train) / train_seconds


def compare_formats(config: TrialConfig, data: DataSplits, rounds: int) -> None:
    device = select_runtime(config.device, config.threads).device
    variants = {
        "fp32 NCHW": Runtime(device, False, torch.contiguous_format),
        "channels_last": Runtime(device, False, torch.channels_last),
        "channels_last+bf16": Runtime(device, True, torch.channels_last),
    }
    for width in (1, 2):
        for batch_norm in (False, True):
            trial = config.replace(width=width, batch_norm=batch_norm)
            speeds: dict[str, list[float]] = {name: [] for name in variants}
            for runtime in variants.values():
                plain_loop(trial.replace(epochs=1), data, runtime)
            for _ in range(rounds):
                for name, runtime in variants.items():
                    speeds[name].append(plain_loop(trial, data, runtime))
            base = statistics.median(speeds["fp32 NCHW"])
            cells = ", ".join(
                f"{name} {statistics.median(v):.0f} img/s (x{statistics.median(v) / base:.2f})"
                for name, v in speeds.items()
            )
            print(f"width {width} batch_norm {batch_norm!s:5}: {cells}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SOURCES), default="faces")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--formats", action="store_true", help="compare memory formats / bf16")
    args = parser.parse_args(argv)
    config = TrialConfig(
        dataset=args.dataset,
        data=str(SOURCES[args.dataset]),
        epochs=args.epochs,
        batch_size=args.batch_size,
        threads=args.threads,
        train_subset=args.train_subset,
        device=args.device,
    )
    data = load_data(config, default_cache_dir())
    torch.set_num_threads(args.threads)
    print(
        f"bench_train: {data.summary()}; batch {args.batch_size}, {args.threads} threads, "
        f"device {select_runtime(config.device, args.threads).device}, "
        f"{args.epochs} epochs x {args.rounds} rounds (after one warm-up round each)"
    )
    if args.formats:
        compare_formats(config, data, args.rounds)
        return
    loops = {"plain": plain_loop, "ours": ours}
    if select_runtime(config.device, args.threads).is_cuda:
        loops["graph"] = graphed_loop
    warm = config.replace(epochs=1)
    for loop in loops.values():
        loop(warm, data)
    results: dict[str, list[float]] = {key: [] for key in loops}
    for _ in range(args.rounds):
        for key, loop in loops.items():
            results[key].append(loop(config, data))
    medians = {key: statistics.median(v) for key, v in results.items()}
    labels = {"plain": "plain PyTorch loop", "ours": "babysitter loop", "graph": "CUDA-graph loop"}
    for key, value in medians.items():
        rounds = ", ".join(f"{v:.0f}" for v in results[key])
        print(f"{labels[key]:<19} {value:8.0f} img/s  (rounds: {rounds})")
    for key in ("ours", "graph")[: len(loops) - 1]:
        paired = statistics.median(
            o / p for o, p in zip(results[key], results["plain"], strict=True)
        )
        ratio = medians[key] / medians["plain"]
        print(f"ratio {key} / plain  {ratio:.3f}  (median of the rounds' ratios {paired:.3f})")


if __name__ == "__main__":
    main()
