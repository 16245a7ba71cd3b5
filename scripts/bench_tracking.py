"""What MLflow tracking costs a study: the same study (same spec, seeds and trials) run twice in
one process on one local Ray runtime, without tracking and with the study's SQLite store, and
the ratio of their wall times. Tracking includes creating the store, the live records, the
record of every stage and the final model. Both skip the sanity checks, which record one run
and would only add the same seconds to both.

Run: .venv/bin/python scripts/bench_tracking.py [--budget demo]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from orchestrator.cli import default_cache_dir
from orchestrator.cluster.ray_runtime import ray_runtime
from orchestrator.names import BudgetName, Step
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.session import load_study_data
from orchestrator.study.folder import StudyFolder
from orchestrator.study.pipeline import Study
from orchestrator.study.spec import load_spec
from orchestrator.tracking.observer import MlflowObserver
from orchestrator.tracking.record import tracking_target
from orchestrator.tracking.store import connect

# the range the sanity checks' lr probe proposes on faces (the preset says lr: auto)
PROBED_LR = {"lr": {"loguniform": [1e-4, 1e-1]}}
FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cbcl-faces.tar.gz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=[str(b) for b in BudgetName], default="demo")
    parser.add_argument("--data", type=Path, default=FACES)
    parser.add_argument("--target", choices=[Step.COARSE, Step.FINAL], type=Step, default="final")
    parser.add_argument(
        "--runner",
        choices=["ray", "local"],
        default="ray",
        help="local: trials one after another in this process (checks the script, not Ray)",
    )
    args = parser.parse_args(argv)
    runner = RayStageRunner() if args.runner == "ray" else LocalStageRunner()

    spec = load_spec("faces").with_changes(trial={"data": str(args.data)}, search_space=PROBED_LR)
    spec, data = load_study_data(spec, args.budget, default_cache_dir(), print)
    walls = {}
    with ray_runtime(needed=args.runner == "ray"), tempfile.TemporaryDirectory() as root:
        for mode in ("off", "on"):
            folder = StudyFolder(Path(root) / mode)
            start = time.perf_counter()
            folder.create(spec, args.target)
            observers = []
            if mode == "on":
                target = tracking_target(folder, spec, None, folder.study_id())
                observers.append(MlflowObserver(connect(target, print), folder, spec, print))
            study = Study(folder, spec, data, runner, observers, skip_sanity=True)
            summary = study.run(args.target)
            walls[mode] = time.perf_counter() - start
            outcome = (summary.final or {}).get("test_accuracy", float("nan"))
            print(f"tracking {mode:<3}  wall {walls[mode]:.1f} s, test accuracy {outcome:.4f}")
    print(f"ratio tracking on / off wall time   {walls['on'] / walls['off']:.3f}")


if __name__ == "__main__":
    main()
