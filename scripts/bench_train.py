"""Training throughput of babysitter's loop vs a minimal hand-written PyTorch loop.

Same model, data, batch size, device and thread count, in one process, alternating short rounds
(this machine's speed drifts by 10 % within a minute); prints the median images/s of each, their
ratio (ours / plain) and the median of the rounds' ratios. On CUDA both loops keep the
data on the GPU and train in bf16 autocast with channels_last.
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

from orchestrator.cli import default_cache_dir
from trainables.config import TrialConfig
from trainables.datasets import DataSplits, load_data
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


def ours(config: TrialConfig, data: DataSplits) -> float:
    """Images/s over the training passes, as the loop reports them (validation excluded)."""
    history = babysitter_train(config, data).history
    train_seconds = sum(len(data.train) / row["images_per_s"] for row in history)
    return len(history) * len(data.train) / train_seconds


class _Format(Runtime):
    """A runtime with a chosen memory format, for --formats."""

    def __init__(self, device: torch.device, bf16: bool, fmt: torch.memory_format) -> None:
        super().__init__(device, bf16)
        object.__setattr__(self, "fmt", fmt)

    @property
    def memory_format(self) -> torch.memory_format:
        return self.fmt  # type: ignore[attr-defined]


def compare_formats(config: TrialConfig, data: DataSplits, rounds: int) -> None:
    device = select_runtime(config.device, config.threads).device
    variants = {
        "fp32 NCHW": _Format(device, False, torch.contiguous_format),
        "channels_last": _Format(device, False, torch.channels_last),
        "channels_last+bf16": _Format(device, True, torch.channels_last),
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
    warm = config.replace(epochs=1)
    plain_loop(warm, data), ours(warm, data)
    results: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(args.rounds):
        results["plain"].append(plain_loop(config, data))
        results["ours"].append(ours(config, data))
    plain, mine = (statistics.median(results[k]) for k in ("plain", "ours"))
    for label, key, value in (
        ("plain PyTorch loop", "plain", plain),
        ("babysitter loop", "ours", mine),
    ):
        rounds = ", ".join(f"{v:.0f}" for v in results[key])
        print(f"{label:<19} {value:8.0f} img/s  (rounds: {rounds})")
    paired = statistics.median(
        o / p for o, p in zip(results["ours"], results["plain"], strict=True)
    )
    print(f"ratio ours / plain  {mine / plain:.3f}  (median of the rounds' ratios {paired:.3f})")


if __name__ == "__main__":
    main()
