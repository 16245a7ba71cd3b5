"""What the command center costs: (1) a faces study run with its reports on (after each round
and at the end), the seconds spent writing them against the study's wall time; (2) `babysit
report` on that study, and on a copy planted to the seed's full budget (100 coarse + 30 fine
trials: each trial repeated with jittered lr / l2 under a new id), and the ratio of the two.

Run: .venv/bin/python scripts/bench_report.py [--budget demo] [--runner local]
     .venv/bin/python scripts/bench_report.py --study STUDY_DIR   (part 2 only, on that study)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.cli import default_cache_dir
from orchestrator.cluster.ray_runtime import ray_runtime
from orchestrator.names import BudgetName, Step
from orchestrator.report.observer import ReportObserver
from orchestrator.report.writer import write_report
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.session import load_study_data
from orchestrator.study.folder import StudyFolder
from orchestrator.study.pipeline import Study
from orchestrator.study.spec import load_spec

PROBED_LR = {"lr": {"loguniform": [1e-4, 1e-1]}}  # what the lr probe proposes on faces
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cbcl-faces.tar.gz"
FULL = {"coarse": 100, "fine": 30}  # the seed's full budget


class TimedReports(ReportObserver):
    spent = 0.0

    def step_finished(self, step: str) -> None:
        start = time.perf_counter()
        super().step_finished(step)
        self.spent += time.perf_counter() - start


def plant(source: Path, target: Path, seed: int = 0) -> int:
    """A copy of ``source`` whose rounds hold FULL's trial counts; returns the trials."""
    shutil.copytree(source, target)
    folder, rng, total = StudyFolder(target), np.random.default_rng(seed), 0
    for stage, wanted in FULL.items():
        tables = folder.read_stage(stage)
        trials, epochs = [tables.trials], [tables.epochs]
        copy = 0
        while sum(len(t) for t in trials) < wanted:
            copy += 1
            more = tables.trials.copy()
            more["trial_id"] = more["trial_id"] + f"_p{copy}"
            for name in ("lr", "l2"):
                more[name] = more[name] * 10 ** rng.uniform(-0.2, 0.2, len(more))
            trials.append(more)
            epochs.append(tables.epochs.assign(trial_id=tables.epochs["trial_id"] + f"_p{copy}"))
        kept = pd.concat(trials, ignore_index=True).head(wanted)
        rows = pd.concat(epochs, ignore_index=True)
        folder.write_stage(stage, type(tables)(kept, rows[rows["trial_id"].isin(kept["trial_id"])]))
        total += len(kept)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=[str(b) for b in BudgetName], default="demo")
    parser.add_argument("--data", type=Path, default=FACES)
    parser.add_argument("--runner", choices=["ray", "local"], default="ray")
    parser.add_argument("--study", type=Path, help="A finished study: skip part 1, report on it.")
    args = parser.parse_args(argv)
    cache = default_cache_dir()
    with tempfile.TemporaryDirectory() as root:
        if args.study is None:
            run_study(args, cache, Path(root) / "study")
        else:
            shutil.copytree(args.study, Path(root) / "study")
        folder = StudyFolder(Path(root) / "study")
        times = {}
        trials = {"study": sum(len(folder.read_stage(s).trials) for s in FULL)}
        trials["planted"] = plant(folder.path, Path(root) / "planted")
        for name in ("study", "planted"):
            start = time.perf_counter()
            write_report(Path(root) / name, Path(root) / f"{name}.html", cache)
            times[name] = time.perf_counter() - start
            print(f"babysit report on {name} ({trials[name]} trials): {times[name]:.1f} s")
        print(f"planted / study: {times['planted'] / times['study']:.2f}")
        start = time.perf_counter()  # as a user runs it: a new process, imports included
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "report", str(Path(root) / "planted")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"`babysit report` on planted, a new process: {time.perf_counter() - start:.1f} s")


def run_study(args: argparse.Namespace, cache: Path, path: Path) -> None:
    """Part 1: the faces study with its reports on, timed."""
    runner = RayStageRunner() if args.runner == "ray" else LocalStageRunner()
    spec = load_spec("faces").with_changes(trial={"data": str(args.data)}, search_space=PROBED_LR)
    spec, data = load_study_data(spec, args.budget, cache, print)
    with ray_runtime(needed=args.runner == "ray"):
        folder = StudyFolder(path)
        folder.create(spec, Step.FINAL)
        reports = TimedReports(folder, cache, print)
        start = time.perf_counter()
        Study(folder, spec, data, runner, [reports], skip_sanity=False).run()
        wall = time.perf_counter() - start
    print(
        f"study: {wall:.1f} s wall, of which writing reports {reports.spent:.1f} s: "
        f"wall / wall without reports = {wall / (wall - reports.spent):.3f}"
    )


if __name__ == "__main__":
    main()
