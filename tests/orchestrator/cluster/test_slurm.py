"""`babysit submit --slurm` on a real one-node SLURM: a job requeued in the middle of the coarse
stage (as a preempted one is) resumes the study and ends COMPLETED, nothing lost or run twice,
with a log that reads like babysit's own."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.study.spec import PRESETS
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import FACES, QUICK, babysit_here
from tests.orchestrator.cluster.slurm import one_node_slurm, wait_for_state
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    with one_node_slurm() as env:
        yield env


def submit(study: Path, env: dict[str, str], cache_dir: Path) -> str:
    spec = study.parent / "faces.yaml"  # the preset, with the quick sanity look and no report
    spec.write_text((PRESETS / "faces.yaml").read_text() + QUICK)
    args = ["submit", spec, "--slurm", "--nodes", "1", "--gpus-per-node", "0"]
    args += ["--cpus-per-node", "2", "--budget", "smoke", "--data", FACES, "--study-dir", study]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", env["SLURM_CONF"])
        proc = babysit_here(*args, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"Submitted batch job (\d+)", proc.stdout).group(1)
    assert f"squeue -j {job}" in proc.stdout and f"tail -f {study}/slurm-{job}.out" in proc.stdout
    return job


def test_a_submitted_job_requeued_mid_coarse_resumes_the_study_to_completed(
    slurm, tmp_path, cache_dir
):
    """One job for both: a requeue (as a preemption does) in the coarse stage, then the job
    runs again and ends COMPLETED with the study whole and babysit's own log."""
    import ray

    ray.shutdown()  # the job's `ray stop --force` ends every Ray on the node, the tests' too
    study = tmp_path / "study"
    job = submit(study, slurm, cache_dir)
    coarse = study / "ray" / "coarse"
    deadline = time.monotonic() + 300
    while not any(p.stat().st_size for p in coarse.glob("*/result.json")):
        assert time.monotonic() < deadline, "no coarse trial reported within 5 minutes"
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", job], env=slurm, check=True)
    wait_for_state(job, slurm, {"PENDING"}, 60)
    # SLURM holds a requeued job for two minutes; an administrator's release, to save them
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm, check=True)
    assert wait_for_state(job, slurm, {"COMPLETED", "FAILED", "CANCELLED"}, 900) == "COMPLETED"
    log = (study / f"slurm-{job}.out").read_text()
    assert "resuming the interrupted stage" in log, log[-2000:]
    assert "test accuracy" in log and "Traceback" not in log
    assert not ANSI.search(log), "colour codes in the job's log"
    assert "usage stats" not in log.lower() and "srun: error" not in log
    assert json.loads((study / "summary.json").read_text())["final"]["test_accuracy"] > 0.5
    trials = pd.read_parquet(study / "results" / "coarse.parquet")
    assert trials["trial_id"].is_unique and len(trials) == 4
    epochs = pd.read_parquet(study / "results" / "coarse_epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert_study_recorded(embedded_uri(study), "faces", study)
