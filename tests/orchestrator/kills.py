"""Stopping a study from outside, as a scheduler or a user does, and reading what it had done:
the Tune trials it had finished for good and the results each trial had reported."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.search.epoch_log import read_log
from tests.conftest import babysit_started


def committed_finished(experiment: Path) -> set[str]:
    """Trial ids that Tune's saved experiment state marks finished: what a restore will skip.

    A result.json line is not enough: the driver may log a trial's last epoch and be killed
    before it saves the state, and then the trial rightly resumes from its last checkpoint."""
    states = sorted(experiment.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return set()
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError):  # caught mid-write
        return set()
    trials = [json.loads(state) for state, _ in trial_data]
    return {t["trial_id"] for t in trials if t["status"] == "TERMINATED"}


def reports_by_trial(experiment: Path) -> dict[str, int]:
    """Trial id -> number of results it reported, from the driver's epoch log (written as each
    result arrives, before Tune saves its state; Tune copies result.json into the study later,
    so a trial can be marked finished there before its result.json arrives)."""
    return {trial: len(rows) for trial, rows in read_log(experiment)[0].items()}


def run_until_killed(
    args: list, cache_dir: Path, experiment: Path, ready: Callable[[set, dict], bool]
) -> tuple[str, set[str], dict[str, int]]:
    """Start ``babysit ARGS`` and SIGKILL it with its local Ray runtime (its process group, as
    a scheduler ends a job) once ``ready(finished, reports)`` holds for the Tune experiment
    ``experiment``: its output, the trials finished for good and every trial's report count."""
    driver = babysit_started(*args, cache=cache_dir)
    deadline = time.monotonic() + 300
    try:
        while not ready(committed_finished(experiment), reports_by_trial(experiment)):
            assert driver.poll() is None, "the stage ended before the kill"
            assert time.monotonic() < deadline, "the stage did not get there in time"
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        out = driver.communicate()[0]
    return out, committed_finished(experiment), reports_by_trial(experiment)
