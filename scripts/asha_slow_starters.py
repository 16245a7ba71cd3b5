"""Does ASHA stop the configs that would have won? Measured on whole learning curves.

N configs drawn from a search space (by default the network's knobs beside lr and l2:
batch_norm, augment, lr_schedule, width) each train for E epochs without early stopping. ASHA's
rule (``search/rungs.py``, the study's own) is then replayed on those curves, the trials
arriving one after another in R shuffled orders, and for each rule the script prints how many
of the eventual top K (by the last epoch's val_acc) it stopped, at which rung, the best final
score it kept, and the epochs it spent (as a ratio to ASHA's). Replaying costs nothing, so
several remedies are compared on the same curves:

- ``asha``: the study's rule (grace period G, reduction factor 3);
- ``grace xN``: a longer grace period;
- ``within KNOB``: one set of rungs per value of KNOB, so that a setting that learns slower
  competes with its own kind until the last epoch.

Run: .venv/bin/python scripts/asha_slow_starters.py --dataset faces --configs 24 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.cli import default_cache_dir
from orchestrator.search.rungs import Rungs
from orchestrator.search.space import parse_space
from trainables.config import TrialConfig
from trainables.datasets import DataSplits, load_data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"faces": DATA / "cbcl-faces.tar.gz", "cifar10": DATA / "cifar10-jpg.tar.gz"}
KNOBS = """
lr: {loguniform: [3.0e-3, 1.0e-1]}
l2: {loguniform: [1.0e-5, 1.0e-2]}
batch_norm: {choice: [false, true]}
augment: {choice: [false, true]}
lr_schedule: {choice: [constant, cosine]}
width: {choice: [1, 2]}
"""
Curve = list[float]
_DATA: DataSplits | None = None  # the forked workers' copy


def draw(space_yaml: str, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    space = parse_space(yaml.safe_load(space_yaml))
    return [{name: p.sample(rng) for name, p in space.items()} for _ in range(n)]


def curve(config: TrialConfig) -> tuple[Curve, float]:
    """The config's val_acc after each epoch, and its seconds per epoch."""
    from trainables.train import train

    history = train(config, _DATA).history
    history = [row for row in history if "val_acc" in row]  # a diverged epoch has none
    scores = [float(row["val_acc"]) for row in history]
    seconds = statistics.mean(float(row["epoch_seconds"]) for row in history) if history else 0.0
    return scores + [scores[-1] if scores else 0.0] * (config.epochs - len(scores)), seconds


@dataclass(frozen=True)
class Rule:
    """ASHA with a grace period; with ``group``, one set of rungs per group of trials."""

    name: str
    grace: int
    group: Callable[[int], Any] | None = None


def replay(
    curves: dict[int, Curve], order: list[int], rule: Rule, epochs: int
) -> tuple[dict[int, int], int]:
    """Which trials the rule stops (at which epoch) and the epochs it lets them train."""
    rungs = Rungs.asha(rule.grace, 3, epochs)
    stopped, spent = {}, 0
    for trial in order:
        group = str(rule.group(trial)) if rule.group else ""
        for epoch, score in enumerate(curves[trial], start=1):
            spent += 1
            decision = rungs.decide(str(trial), epoch, score, group)
            if decision is not None and decision.stopped:
                stopped[trial] = epoch
                break
    return stopped, spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SOURCES), default="faces")
    parser.add_argument("--data", type=Path, help="the data set's archive [default: shared]")
    parser.add_argument("--configs", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--top", type=int, default=5, help="K: the eventual best")
    parser.add_argument("--orders", type=int, default=20, help="R: arrival orders replayed")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--space", default=KNOBS, help="a search space, as YAML")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curves", type=Path, help="a JSON file: read if it exists, else written")
    args = parser.parse_args(argv)

    drawn = draw(args.space, args.configs, args.seed)
    if args.curves and args.curves.exists():
        saved = json.loads(args.curves.read_text())
        drawn, curves, seconds = saved["drawn"], saved["curves"], saved["seconds"]
        curves = {int(t): c for t, c in curves.items()}
        seconds = {int(t): s for t, s in seconds.items()}
        args.configs, args.epochs = len(drawn), len(curves[0])
    else:
        curves, seconds = train_all(args, drawn)
    if args.curves and not args.curves.exists():
        args.curves.write_text(json.dumps({"drawn": drawn, "curves": curves, "seconds": seconds}))
    judge(args, drawn, curves, seconds)


def train_all(
    args: argparse.Namespace, drawn: list[dict[str, Any]]
) -> tuple[dict[int, Curve], dict[int, float]]:
    global _DATA
    base = TrialConfig(
        dataset=args.dataset,
        data=str(args.data or SOURCES[args.dataset]),
        train_subset=args.train_subset,
        epochs=args.epochs,
        threads=1,
    )
    _DATA = load_data(base, default_cache_dir())
    configs = [base.replace(seed=i, **c) for i, c in enumerate(drawn)]
    print(
        f"asha_slow_starters: {_DATA.summary()}; {args.configs} configs x {args.epochs} epochs, "
        f"{args.workers} at a time"
    )
    start = time.perf_counter()
    if args.workers > 1:  # forked: each worker has the decoded data already
        with ProcessPoolExecutor(args.workers) as pool:
            trained = list(pool.map(curve, configs))
    else:
        trained = list(map(curve, configs))
    print(f"trained  {args.configs * args.epochs} epochs in {time.perf_counter() - start:.0f} s")
    return dict(enumerate(c for c, _ in trained)), dict(enumerate(s for _, s in trained))


def judge(
    args: argparse.Namespace,
    drawn: list[dict[str, Any]],
    curves: dict[int, Curve],
    seconds: dict[int, float],
) -> None:
    """Replays each rule on the curves and prints what it stopped and what it spent."""

    final = {t: c[-1] for t, c in curves.items()}
    best = sorted(final, key=final.get, reverse=True)[: args.top]
    knobs = [n for n in yaml.safe_load(args.space) if n not in ("lr", "l2")]
    print(f"top {args.top} by the last epoch's val_acc:")
    for t in best:
        shown = ", ".join(f"{k}={drawn[t][k]}" for k in knobs)
        curve_text = " ".join(f"{s:.3f}" for s in curves[t])
        print(f"  config {t:<3} {final[t]:.4f}  {shown}  (epochs: {curve_text})")

    rules = [Rule("asha", args.grace), Rule("grace x2", args.grace * 2)]
    rules += [Rule(f"within {k}", args.grace, lambda t, k=k: drawn[t][k]) for k in knobs]
    orders = [random.Random(args.seed + r).sample(range(len(curves)), len(curves))
              for r in range(args.orders)]  # fmt: skip
    print(
        f"over {args.orders} arrival orders (mean): top {args.top} stopped, by rung; the best "
        "final val_acc kept; epochs spent"
    )
    baseline = None
    for rule in rules:
        lost, kept, spent, by_rung = [], [], [], {}
        for order in orders:
            stopped, epochs = replay(curves, order, rule, args.epochs)
            lost.append(sum(t in stopped for t in best))
            for t in best:
                if t in stopped:
                    by_rung[stopped[t]] = by_rung.get(stopped[t], 0) + 1 / len(orders)
            kept.append(max(final[t] for t in curves if t not in stopped))
            spent.append(epochs)
        cost = statistics.mean(spent)
        baseline = baseline or cost
        rungs = ", ".join(f"epoch {e}: {n:.1f}" for e, n in sorted(by_rung.items())) or "none"
        print(
            f"  {rule.name:<20} {statistics.mean(lost):4.1f} of {args.top} ({rungs})  "
            f"best kept {statistics.mean(kept):.4f}  epochs {cost:6.1f} "
            f"(x{cost / baseline:.2f})"
        )


if __name__ == "__main__":
    main()
