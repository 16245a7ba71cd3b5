"""`babysit submit --address` and `babysit jobs` against a real two-node Ray cluster on
127.0.0.1 (a head with the dashboard and a second raylet) with token authentication on."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.cluster.ray_runtime import ray_runtime
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import BABYSIT, FACES, QUICK, assert_one_line_error
from tests.orchestrator.study.test_model_files import NETS
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded
from tests.orchestrator.tracking.test_store import free_port


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]
    token: str
    temp: Path  # the cluster's RAY_TMPDIR: `ray start` notes its address in temp/ray


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("cluster")
    token = secrets.token_hex(32)
    token_file = root / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    venv = Path(sys.executable).parent
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "PATH": f"{venv}:{os.environ['PATH']}",  # what an activated venv gives the nodes
        "BABYSITTER_CACHE": str(cache_dir),
    }
    gcs, dashboard = free_port(), free_port()
    temp = Path(tempfile.mkdtemp(prefix="bsray-"))  # short: Ray's socket paths live under it
    ray = [str(venv / "ray"), "start", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
    head = ["--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}/ray"]
    head.append(f"--dashboard-port={dashboard}")
    start = {"env": env, "capture_output": True, "text": True, "timeout": 180}
    try:
        # each node's job agent on a port of its own: the default (52365) may be held by another
        # Ray on this machine (the tests' own), and then no agent takes the job
        proc = subprocess.run([*ray, *head, *agent_port()], **start)
        assert proc.returncode == 0, proc.stderr
        proc = subprocess.run([*ray, f"--address=127.0.0.1:{gcs}", *agent_port()], **start)
        assert proc.returncode == 0, proc.stderr
        yield Cluster(f"http://127.0.0.1:{dashboard}", env, token, temp)
    finally:
        kill_processes_of(temp)  # not `ray stop`: it would stop every Ray on this machine
        shutil.rmtree(temp, ignore_errors=True)


def kill_processes_of(temp: Path) -> None:
    """SIGKILL the Ray processes whose command line names ``temp``, and their children."""
    parents: dict[int, int] = {}
    named: set[int] = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                parents[int(proc.name)] = int(
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
                if str(temp) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    named.add(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    doomed, grew = set(named), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in doomed} - doomed
        doomed |= children
        grew = bool(children)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def babysit_on(cluster: Cluster, *args, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [*BABYSIT, *map(str, args)],
        capture_output=True,
        text=True,
        env=env or cluster.env,
        timeout=timeout,
    )


def agent_port() -> list[str]:
    return [f"--dashboard-agent-listen-port={free_port()}"]


def job_count(cluster: Cluster) -> int:
    listed = babysit_on(cluster, "jobs", "list", "--address", cluster.address)
    assert listed.returncode == 0, listed.stderr
    return int(listed.stdout.strip().splitlines()[-1].split()[0].lstrip("("))


JOB_SPEC = """
name: twonodes
trial: {{dataset: faces, train_subset: 300, model: "{net}:mlp"}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 2, epochs: 1}}
fine: {{trials: 2, epochs: 1}}
final: {{epochs: 1}}
min_rung_steps: 1  # plumbing, not judgement: no stretched rungs
""" + QUICK.replace("{", "{{").replace("}", "}}")


@pytest.mark.slow
def test_a_study_of_a_users_network_runs_as_a_ray_job_on_both_nodes(cluster, tmp_path):
    """Two trials at a time on two one-CPU nodes: each stage uses both. The user's model file
    travels with the job: it is deleted as soon as the job is submitted."""
    study = tmp_path / "study"
    net = Path(shutil.copy(NETS, tmp_path / "net.py"))
    spec_file = tmp_path / "twonodes.yaml"
    spec_file.write_text(JOB_SPEC.format(net=net))
    command = [*BABYSIT, "submit", spec_file, "--address", cluster.address, "--data", FACES]
    command += ["--study-dir", study, "--skip-sanity", "--follow"]
    with subprocess.Popen(
        list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=cluster.env,
    ) as proc:  # fmt: skip
        out = []
        for line in proc.stdout:
            out.append(line)
            if line.startswith("job ") and "submitted to" in line:
                net.unlink()
        returncode = proc.wait(timeout=300)
    output = "".join(out)
    assert returncode == 0 and not net.exists(), output[-3000:]
    job = output.split("job ", 1)[1].split()[0]
    assert f"job      {job} SUCCEEDED" in output
    assert "test accuracy" in output and "(1396 images)" in output
    coarse = pd.read_parquet(study / "results" / "coarse.parquet")
    fine = pd.read_parquet(study / "results" / "fine.parquet")
    assert len(coarse) == coarse["trial_id"].nunique() == 2
    assert pd.concat([coarse, fine])["node_id"].nunique() == 2  # trials ran on both nodes
    assert set(coarse["model"]) == {f"{study}/code/net.py:mlp"}  # the study's own copy
    assert (study / "code" / "net.py").read_bytes() == NETS.read_bytes()
    assert f"cluster  all 2 Ray nodes see the study folder {study}" in output
    assert not list(tmp_path.glob(".babysitter-shared-*"))  # the probe's marker is gone
    assert_study_recorded(embedded_uri(study), "twonodes", study)

    status = babysit_on(cluster, "jobs", "status", job, "--address", cluster.address)
    assert status.returncode == 0 and f"{job}  SUCCEEDED" in status.stdout
    logs = babysit_on(cluster, "jobs", "logs", job, "--address", cluster.address)
    assert logs.returncode == 0 and "test accuracy" in logs.stdout
    assert cluster.token not in output + logs.stdout
    client = MlflowClient(embedded_uri(study))
    for run in client.search_runs([client.get_experiment_by_name("twonodes").experiment_id]):
        recorded = {**run.data.params, **run.data.tags}
        assert not any(cluster.token in str(v) for v in recorded.values())


@pytest.mark.slow
def test_a_wrong_or_missing_token_or_address_fails_in_one_line_and_submits_nothing(
    cluster, tmp_path
):
    before = job_count(cluster)
    args = ["submit", "faces", "--address", cluster.address, "--study-dir", tmp_path / "s"]
    wrong = {**cluster.env, "RAY_AUTH_TOKEN": "0" * 64}
    assert_one_line_error(babysit_on(cluster, *args, env=wrong), "403: wrong token")
    nothing = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    nothing["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    assert_one_line_error(babysit_on(cluster, *args, env=nothing), "401: no token sent")
    gone = ["submit", "faces", "--address", f"http://127.0.0.1:{free_port()}"]
    assert_one_line_error(
        babysit_on(cluster, *gone, "--study-dir", tmp_path / "s"), "no Ray dashboard answers"
    )
    relative = babysit_on(cluster, *args[:4], "--study-dir", "studies/x")
    assert_one_line_error(relative, "--study-dir studies/x", "absolute path", "every node")
    assert job_count(cluster) == before
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_local_study_never_joins_a_cluster_started_on_the_same_machine(cluster, monkeypatch):
    """Ray's own default joins the cluster that `ray start` last noted on this machine; a
    study without --address must run on a runtime of its own instead."""
    import ray

    ray.shutdown()  # the tests' shared runtime: this study must start one of its own
    monkeypatch.setenv("RAY_TMPDIR", str(cluster.temp))  # where that note is found
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert (cluster.temp / "ray" / "ray_current_cluster").exists()
    with ray_runtime():
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 1 and nodes[0]["Resources"]["CPU"] == os.cpu_count()
