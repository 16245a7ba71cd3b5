"""Images/s of K trials trained fused in one process vs the same K trials as K processes side by
side vs one trial alone, on whatever device it finds (trainables/fused.py).

Every variant trains the seed CNN with the trainable's own step (bf16 autocast and channels_last
where the runtime uses them) on the same device-resident batches for the same number of steps;
"images/s" counts member-images (K members on a batch of 64 count 64 K). Ratios are against the
separate processes (what babysitter ran before) and against one trial, measured in this run.
Run: .venv/bin/python scripts/bench_fused.py [--dataset cifar10] [--k 2 4 8] [--steps 60]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.datasets import default_cache_dir, load_data
from trainables.device import select_runtime
from trainables.fused_knee import knee, sample_batches, stack_seconds, trial_seconds

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"faces": DATA / "cbcl-faces.tar.gz", "cifar10": DATA / "cifar10-jpg.tar.gz"}


def member_configs(base: TrialConfig, k: int) -> list[TrialConfig]:
    """K members a coarse stage could draw: lr, momentum and l2 spread in log space."""
    return [
        base.replace(
            lr=0.002 * 2 ** (i % 5), momentum=(0.9, 0.5, 0.0)[i % 3], l2=1e-5 * 3**i, seed=i
        )
        for i in range(k)
    ]


def _process(config: TrialConfig, steps: int, barrier, results) -> None:
    runtime = select_runtime(config.device, config.threads)
    data = load_data(config, default_cache_dir())
    work = sample_batches(data, runtime, config.batch_size, steps)
    results.put(trial_seconds(config, data, runtime, work, barrier))


def separate_processes(configs: list[TrialConfig], steps: int) -> float:
    """Wall seconds until the last of K processes, started together, has run its steps."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(configs) + 1), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(c, steps, barrier, results)) for c in configs]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    for _ in procs:
        results.get()
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SOURCES), default="cifar10")
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument(
        "--processes-max", type=int, default=8, help="time K processes only up to this K"
    )
    parser.add_argument("--knee", action="store_true", help="also the K that fuse: auto picks")
    args = parser.parse_args(argv)
    base = TrialConfig(
        dataset=args.dataset,
        data=str(SOURCES[args.dataset]),
        batch_size=args.batch_size,
        threads=args.threads,
        device=args.device,
        batch_norm=args.batch_norm,
    )
    runtime = select_runtime(base.device, base.threads)
    data = load_data(base, default_cache_dir())
    work = sample_batches(data, runtime, args.batch_size, args.steps)
    images = args.steps * args.batch_size
    alone = images / trial_seconds(base, data, runtime, work)
    print(
        f"bench_fused: {data.summary()}; seed CNN, batch {args.batch_size}, {args.steps} steps, "
        f"device {runtime.device}, bf16 {runtime.bf16}, batch_norm {args.batch_norm}"
    )
    print(f"one trial          {alone:9.0f} img/s")
    for k in args.k:
        configs = member_configs(base, k)
        together = k * images / stack_seconds(configs, data, runtime, work)
        line = f"K={k:<3} fused      {together:9.0f} img/s | "
        if k <= args.processes_max:
            threads = max(1, args.threads // k) if runtime.device.type == "cpu" else args.threads
            apart_configs = [c.replace(threads=threads) for c in configs]
            apart = k * images / separate_processes(apart_configs, args.steps)
            line += (
                f"{k} processes ({threads} threads each) {apart:9.0f} img/s | "
                f"fused / processes x{together / apart:.2f}, "
            )
        print(line + f"fused / one trial x{together / alone:.2f}")
    if args.knee:
        size, figures = knee(base, data, most=max(args.k), steps=args.steps)
        shown = ", ".join(f"K={k} {v:.0f}" for k, v in figures.items())
        print(f"fuse: auto picks K={size} (member-images/s: {shown})")


if __name__ == "__main__":
    main()
