"""A study stopped every way it can be on a shared node (Ctrl-C, SIGKILL, its Ray session
folder removed, its raylet killed) says so in one line with the way on, and `babysit resume`
finishes it as if nothing happened: the sanity checks and `lr: auto` are not run again, every
ASHA decision made before a stop is kept, no rung is decided twice, no finished trial runs
again, every trial is held once, in the tables and in MLflow; then every command on the
finished study is a no-op."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from orchestrator.failure import what_happened
from orchestrator.search.results import disagreement
from orchestrator.search.rungs import read_decisions
from orchestrator.study.folder import StudyFolder
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import FACES, QUICK, assert_one_line_error, babysit_here, babysit_started
from tests.orchestrator.kills import committed_finished, reports_by_trial
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded

SPEC = (
    f"""
name: stops
trial: {{dataset: faces, data: {FACES}, train_subset: 600, threads: 1}}
search_space:
  lr: auto
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 12, epochs: 4, scheduler: {{grace_period: 1, reduction_factor: 2}}}}
fine: {{trials: 2, epochs: 2}}
final: {{epochs: 1}}
narrowing: {{top_k: 3}}
min_rung_steps: 1
"""
    + QUICK
)


def test_what_happened_names_the_failure_in_words():
    lost = FileNotFoundError("/tmp/babysit-ray-x/session_2026/artifacts/error.pkl")
    assert what_happened(lost).startswith("the study's Ray session folder was removed under it")
    from ray.exceptions import RaySystemError
    from ray.tune.error import TuneError

    assert what_happened(TuneError("Trials did not complete")).startswith(
        "Ray Tune stopped the stage (TuneError: Trials did not complete"
    )
    assert what_happened(RaySystemError("gone")).startswith("the study's Ray runtime was lost")
    assert what_happened(ValueError("x")) == (
        "the study stopped on an unexpected error (ValueError: x)"
    )


class Driver:
    """`babysit ARGS` in a process group of its own (as a shell runs it), its local Ray
    runtime's session under ``tmp``."""

    def __init__(self, args: list, cache: Path, tmp: Path) -> None:
        self.process = babysit_started(*args, cache=cache, TMPDIR=str(tmp))

    def wait_for(self, ready, timeout: float = 240) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, "the study did not get there in time"
            time.sleep(0.1)

    def end(self) -> subprocess.CompletedProcess:
        out, err = self.process.communicate(timeout=240)
        return subprocess.CompletedProcess([], self.process.returncode, out, err)


def _runtime_processes(tmp: Path, name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(command[0].decode()).name == name and str(tmp).encode() in b" ".join(command):
            found.append(int(pid))
    return found


@pytest.mark.slow
def test_a_study_stopped_four_ways_resumes_to_every_decision_and_trial_once(
    tmp_path, cache_dir, study_dir
):
    spec = tmp_path / "stops.yaml"
    spec.write_text(SPEC)
    tmp = Path(tempfile.mkdtemp(prefix="bt-", dir="/tmp"))  # Ray's socket paths stay short
    asha = study_dir / "ray" / "coarse" / "asha.jsonl"
    epochs = study_dir / "ray" / "coarse" / "epochs.jsonl"

    def count(path: Path) -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    logged = []
    try:
        first = Driver(["run", spec, "--study-dir", study_dir], cache_dir, tmp)
        first.wait_for(lambda: count(asha) >= 3)
        os.killpg(first.process.pid, signal.SIGINT)  # Ctrl-C in the shell
        proc = first.end()
        assert proc.returncode == 130
        assert_one_line_error(proc, f"interrupted; `babysit resume {study_dir}` goes on")
        assert not list(tmp.glob("babysit-ray-*"))  # its session folder went with it
        sanity = assert_sanity_passed(proc.stdout, study_dir)
        logged.append(read_decisions(asha))

        for stop in ("kill", "session", "raylet"):
            driver = Driver(["resume", study_dir], cache_dir, tmp)
            rows = count(epochs)
            driver.wait_for(lambda rows=rows: count(epochs) >= rows + 2)
            if stop == "kill":  # a scheduler ending the job, once Tune has finished a trial
                driver.wait_for(lambda: committed_finished(study_dir / "ray" / "coarse"))
                os.killpg(driver.process.pid, signal.SIGKILL)
                assert driver.end().returncode == -signal.SIGKILL
                experiment = study_dir / "ray" / "coarse"
                finished = committed_finished(experiment)
                before = {t: n for t, n in reports_by_trial(experiment).items() if t in finished}
            elif stop == "session":  # another job's cleanup of the temp folder
                for session in tmp.glob("babysit-ray-*/session_2*"):
                    shutil.rmtree(session, ignore_errors=True)
                proc = driver.end()
                assert_one_line_error(proc, "Ray session folder was removed", "babysit resume")
            else:
                (raylet,) = _runtime_processes(tmp, "raylet")
                os.kill(raylet, signal.SIGKILL)
                proc = driver.end()
                assert proc.returncode == 1
                assert_one_line_error(proc, f"its raylet (pid {raylet}) ended", "babysit resume")
                log = Path(proc.stderr.split("details in ")[1].split(";")[0])
                assert "raylet.out" in log.read_text()
            logged.append(read_decisions(asha))
    finally:
        for pid in _runtime_processes(tmp, "raylet") + _runtime_processes(tmp, "gcs_server"):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)

    proc = babysit_here("resume", study_dir, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "sanity   checking" not in proc.stdout
    after = reports_by_trial(study_dir / "ray" / "coarse")
    assert before and all(after[t] == n for t, n in before.items())  # none ran again
    decisions = read_decisions(asha)
    for before in logged:  # every decision made before a stop is kept unchanged
        assert decisions[: len(before)] == before
    judged = [(d.trial_id, d.rung) for d in decisions]
    assert len(judged) == len(set(judged)) and len(logged[-1]) > len(logged[0]) >= 3
    folder = StudyFolder(study_dir)
    for stage in ("coarse", "fine"):
        tables = folder.read_stage(stage)
        assert tables.trials["trial_id"].is_unique and disagreement(tables) is None
    coarse = folder.read_stage("coarse").trials
    assert len(coarse) == 12
    stopped = {d.trial_id for d in decisions if d.stopped}
    assert set(coarse.loc[coarse["status"] == "stopped_by_asha", "trial_id"]) == stopped
    assert coarse["lr"].between(*sanity["lr_range"]).all()
    assert json.loads((study_dir / "final" / "test_metrics.json").read_text())["accuracy"] > 0.5
    assert_study_recorded(embedded_uri(study_dir), "stops", study_dir)

    again = babysit_here("run", spec, "--study-dir", study_dir, cache=cache_dir)
    assert again.returncode == 0, again.stderr
    assert "coarse already finished" in again.stdout and "final  already trained" in again.stdout
    assert "sanity   checking" not in again.stdout and "coarse lr loguniform" in again.stdout
    shown = babysit_here("sanity", spec, "--study-dir", study_dir, cache=cache_dir)
    assert shown.returncode == 0 and "sanity   already passed" in shown.stdout
    assert "PASS  overfit" in shown.stdout and "passed in" not in shown.stdout
    assert json.loads((study_dir / "sanity.json").read_text()) == sanity
    assert folder.read_stage("coarse").trials.equals(coarse)
    assert_study_recorded(embedded_uri(study_dir), "stops", study_dir)


def assert_sanity_passed(out: str, study: Path) -> dict:
    """The checks ran before the coarse stage, all passed, each said what it expected and
    what a failure would mean, and `lr: auto` took the probe's range; the record."""
    assert out.index("sanity   passed") < out.index("coarse   0/12 done")
    loss = float(re.search(r"PASS  initial_loss +loss ([0-9.]+),", out).group(1))
    assert abs(loss - math.log(2)) < 0.1
    for check in ("regularization", "overfit", "lr_probe", "update_ratio", "beats_chance"):
        assert re.search(rf"PASS  {check} ", out), out
    assert out.count("   expected ") == 7
    assert out.count("if not: ") + out.count("means: ") == 7
    sanity = json.loads((study / "sanity.json").read_text())
    low, high = sanity["lr_range"]
    assert sanity["passed"] and f"proposed coarse lr range: [{low:.0e}, {high:.0e}]" in out
    assert f"sanity   lr: auto -> coarse lr loguniform[{low:g}, {high:g}]" in out
    assert (study / "sanity_lr_probe.png").read_bytes()[:4] == b"\x89PNG"
    assert not (study / "results" / "coarse.parquet").exists()
    return sanity
