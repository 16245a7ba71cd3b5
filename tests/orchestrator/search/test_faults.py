"""Faults as a cluster deals them (Ray's release tests kill random nodes every few seconds):
trial workers SIGKILLed at random during a stage; every trial ends with a status, held once
in the tables and in MLflow, no run left RUNNING."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import parse_spec
from orchestrator.tracking.store import embedded_uri
from tests.conftest import FACES, seed_store
from tests.orchestrator import planted
from tests.orchestrator.tracking.mlflow_checks import assert_stage_recorded, tree

SPEC = f"""
name: faults
trial: {{dataset: faces, data: {FACES}, train_subset: 200, threads: 1}}
search_space: {{lr: {{loguniform: [1.0e-3, 1.0e-1]}}}}
coarse: {{trials: 12, epochs: 6, scheduler: {{type: fifo}}}}
fine: {{trials: 1, epochs: 1}}
resources: {{max_concurrent: 2}}
retries: 30
min_rung_steps: 1
"""


def trial_workers() -> list[int]:
    """Ray's processes running a trial: their title names the trainable's actor."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:  # ended meanwhile
            continue
        if title.startswith(b"ray::ImplicitFunc"):
            found.append(int(cmdline.parent.name))
    return found


class Killer(threading.Thread):
    """SIGKILLs a random trial worker every ``every`` seconds until stopped."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every, self.kills, self.done = every, 0, threading.Event()

    def run(self) -> None:
        chance = random.Random(0)
        while not self.done.wait(self.every):
            workers = trial_workers()
            if workers:
                try:
                    os.kill(chance.choice(workers), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass


@pytest.mark.slow
def test_trial_workers_killed_at_random_lose_nothing(tmp_path, cache_dir, local_ray, empty_store):
    cloudpickle.register_pickle_by_value(planted)
    folder = StudyFolder(seed_store(tmp_path / "study", empty_store))
    options = session.SessionOptions(
        cache_dir, echo=print, runner=RayStageRunner(planted.quick_trials(seconds=0.25))
    )
    killer = Killer(every=2.0)
    killer.start()
    try:
        spec = parse_spec(SPEC, "faults")
        session.run_new(spec, folder, Step.COARSE, BudgetName.FULL, options, skip_sanity=True)
    finally:
        killer.done.set()
        killer.join()
    assert killer.kills >= 5, f"only {killer.kills} workers killed"
    trials = pd.read_parquet(folder.results / "coarse.parquet")
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"} and trials["retries"].sum() >= 1
    epochs = pd.read_parquet(folder.results / "coarse_epochs.parquet")
    assert len(epochs) == 72 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert_stage_recorded(embedded_uri(folder.path), "faults", folder.path, "coarse")
    (_, runs) = tree(embedded_uri(folder.path), "faults")["coarse"]
    assert all(run.info.status == "FINISHED" for run in runs)
