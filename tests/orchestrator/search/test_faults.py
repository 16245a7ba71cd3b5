"""Faults as a cluster deals them (Ray's release tests kill random nodes every few seconds):
trial workers SIGKILLed at random during a stage; every trial ends with a status, held once
in the tables and in MLflow, no run left RUNNING."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import parse_spec
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import FACES, QUICK, seed_store
from tests.orchestrator.tracking.mlflow_checks import assert_stage_recorded, tree

SPEC = (
    f"""
name: faults
trial: {{dataset: faces, data: {FACES}, train_subset: 800, threads: 1}}
search_space: {{lr: {{loguniform: [1.0e-3, 1.0e-1]}}}}
coarse: {{trials: 6, epochs: 12, scheduler: {{type: fifo}}}}  # time for 5 kills
fine: {{trials: 1, epochs: 1}}
resources: {{max_concurrent: 2}}
retries: 30
min_rung_steps: 1
"""
    + QUICK
)


def trial_workers(doing: bytes = b"") -> set[int]:
    """Ray's processes of trials: their title names the trainable's actor, and the method it
    runs now (``ray::ImplicitFunc.train`` while a trial trains; ``.reset`` or ``.restore``
    while a reused actor takes on a trial)."""
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc" + doing):
                found.add(int(proc.name))
        except OSError:  # ended meanwhile
            continue
    return found


class Killer(threading.Thread):
    """SIGKILLs a random trial worker every ``every`` seconds, ``most`` times at most, and only
    one that has lived ``every`` seconds and is training now: Tune retries a trial whose worker
    dies while it trains, but errors one whose worker dies while the actor is still starting or
    taking on the trial (a pending trial: seen in CI when a reused actor was killed)."""

    def __init__(self, every: float, most: int) -> None:
        super().__init__(daemon=True)
        self.every, self.most, self.kills, self.done = every, most, 0, threading.Event()

    def run(self) -> None:
        chance, seen, last_kill = random.Random(0), {}, time.monotonic()
        while self.kills < self.most and not self.done.wait(0.2):
            now = time.monotonic()
            workers = trial_workers()
            seen = {pid: seen.get(pid, now) for pid in workers}
            training = trial_workers(b".train")  # not a reused actor taking on its next trial
            ready = sorted(
                p for p, since in seen.items() if now - since >= self.every and p in training
            )
            if ready and now - last_kill >= self.every:
                try:
                    os.kill(chance.choice(ready), signal.SIGKILL)
                    self.kills, last_kill = self.kills + 1, now
                except ProcessLookupError:
                    pass


@pytest.mark.slow
def test_trial_workers_killed_at_random_lose_nothing(tmp_path, cache_dir, local_ray, empty_store):
    folder = StudyFolder(seed_store(tmp_path / "study", empty_store))
    options = session.SessionOptions(cache_dir, echo=print, runner=RayStageRunner())
    killer = Killer(every=2.5, most=6)
    killer.start()
    try:
        spec = parse_spec(SPEC, "faults")
        session.run_new(spec, folder, Step.COARSE, BudgetName.FULL, options, skip_sanity=True)
    finally:
        killer.done.set()
        killer.join()
    assert killer.kills >= 5, f"only {killer.kills} workers killed"
    trials = pd.read_parquet(folder.results / "coarse.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    errors = trials.loc[trials["status"] != "completed", ["trial_id", "retries", "error"]]
    assert errors.empty, errors.to_dict("records")
    assert trials["retries"].sum() >= 1
    epochs = pd.read_parquet(folder.results / "coarse_epochs.parquet")
    assert len(epochs) == 6 * 12 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert_stage_recorded(embedded_uri(folder.path), "faults", folder.path, "coarse")
    (_, runs) = tree(embedded_uri(folder.path), "faults")["coarse"]
    assert all(run.info.status == "FINISHED" for run in runs)
