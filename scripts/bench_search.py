"""Search-stage benchmarks on the faces data, on a real local Ray runtime, in one process.

1. Orchestration efficiency of a coarse stage: the seconds the trials spent training (sum of
   their epochs) / (stage wall time x concurrent trial slots). 1.0 would mean Ray, trial start-up
   and evaluation cost nothing.
2. ASHA vs FIFO on the same sampled trials (same searcher seed): epochs consumed and best
   validation accuracy, as ratios ASHA / FIFO.

Run: .venv/bin/python scripts/bench_search.py [--trials 20 --epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from orchestrator.cli import default_cache_dir
from orchestrator.cluster.ray_runtime import ray_runtime
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.ranking import rank
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.search.stage import StageRun
from orchestrator.search.stage_spec import Scheduler, Stage
from orchestrator.study.observer import StudyObserver
from orchestrator.study.spec import load_spec
from trainables.datasets import load_data

# the range the sanity checks' lr probe proposes on faces (the preset says lr: auto)
PROBED_LR = {"lr": {"loguniform": [1e-4, 1e-1]}}
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cbcl-faces.tar.gz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--data", type=Path, default=FACES)
    parser.add_argument(
        "--runner",
        choices=["ray", "local"],
        default="ray",
        help="local: trials one after another in this process (checks the script, not Ray)",
    )
    args = parser.parse_args(argv)
    runner = RayStageRunner() if args.runner == "ray" else LocalStageRunner()

    trial = {"data": str(args.data)}
    if args.train_subset:
        trial["train_subset"] = args.train_subset
    spec = load_spec("faces").with_changes(trial=trial, search_space=PROBED_LR)
    data = load_data(spec.base_config(), default_cache_dir())
    slots = os.cpu_count() or 1
    print(f"data   {data.summary()}; {slots} trial slots (1 CPU each)")

    stats = {}
    with ray_runtime(needed=args.runner == "ray"), tempfile.TemporaryDirectory() as storage:
        for name in ("asha", "fifo"):
            stage = Stage(
                trials=args.trials,
                epochs=args.epochs,
                scheduler=Scheduler(type=name, grace_period=1, reduction_factor=3),
            )
            run = StageRun(
                name, stage, spec.space(), spec.base_config(), spec.resources, 0, Path(storage)
            )
            start = time.perf_counter()
            tables = runner.run(run, data, StudyObserver())
            trials, epochs = tables.trials, tables.epochs
            wall = time.perf_counter() - start
            training = float(epochs["epoch_seconds"].sum())
            best = rank(trials).iloc[0]["val_acc"]
            stats[name] = (wall, training, int(trials["epochs_run"].sum()), float(best))
            print(
                f"{name:<5}  {len(trials)} trials x {args.epochs} epochs: wall {wall:.1f} s, "
                f"training {training:.1f} s, epochs consumed {stats[name][2]}, "
                f"best val_acc {best:.4f}, efficiency {training / (wall * slots):.3f}"
            )

    a_wall, _, a_epochs, a_best = stats["asha"]
    f_wall, f_train, f_epochs, f_best = stats["fifo"]
    print(f"orchestration efficiency (FIFO stage)   {f_train / (f_wall * slots):.3f}")
    print(f"ratio ASHA / FIFO epochs consumed       {a_epochs / f_epochs:.3f}")
    print(f"ratio ASHA / FIFO wall time             {a_wall / f_wall:.3f}")
    print(f"ratio ASHA / FIFO best val_acc          {a_best / f_best:.3f}")


if __name__ == "__main__":
    main()
