"""MLflow tracking against the real stores: the study's own SQLite store and a real
`mlflow server` on 127.0.0.1 that the tests start, kill and restart."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import load_spec
from orchestrator.tracking.sqlite_store import embedded_uri
from orchestrator.tracking.store import (
    TrackingTarget,
    epoch_metrics,
    open_tracker,
)
from tests.conftest import (
    BABYSIT,
    FACES,
    QUICK,
    assert_one_line_error,
    babysit_here,
)
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded, tree
from trainables.trial_state import model_from

MANY_SPEC = (
    """
name: many
trial: {dataset: faces, train_subset: 200}
search_space:
  lr: {loguniform: [1.0e-3, 1.0e-1]}
  l2: {loguniform: [1.0e-5, 1.0e-3]}
coarse: {trials: 8, epochs: 2, scheduler: {type: fifo}}
fine: {trials: 2, epochs: 2}
min_rung_steps: 1  # plumbing, not judgement: no stretched rungs
"""
    + QUICK
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.5)


@contextlib.contextmanager
def mlflow_server(root: Path, port: int) -> Iterator[subprocess.Popen]:
    """A real tracking server on 127.0.0.1 with its own SQLite store and artifact folder."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'server.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as `babysit ui`
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_epoch_metrics_keep_what_was_measured_once():
    report = {"epoch": 2, "lr": 0.1, "train_loss": 0.5, "val_acc": 0.9, "val_loss": math.nan}
    report |= {"update_ratio/conv1": 1e-3, "time_total_s": 9.0, "trial_status": "running"}
    assert epoch_metrics(report) == {
        "lr": 0.1,
        "train_loss": 0.5,
        "val_acc": 0.9,
        "update_ratio/conv1": 1e-3,
    }
    diverged = {"epoch": 1, "lr": 10.0, "train_loss": math.inf, "val_acc": 0.0}
    assert epoch_metrics({**diverged, "trial_status": "diverged"}) == {"lr": 10.0}


def test_a_second_tracker_finds_the_runs_and_sends_nothing_twice(tmp_path):
    target = TrackingTarget(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="x", study_id="s1")
    live = open_tracker(target, print)
    run = live.trial_run("coarse", "a_00001", {"lr": 0.1}, "00001 lr=0.1")  # makes the parent
    epochs = [{"epoch": e, "lr": 0.1, "val_acc": 0.5 + e / 10} for e in (1, 2)]
    assert live.log_epochs(run, epochs[:1]) == 1

    later = open_tracker(target, print)  # a resumed driver, or the stage's record
    assert later.trial_run("coarse", "a_00001", {}, "") == run
    assert later.log_epochs(run, epochs) == 1 and later.log_epochs(run, epochs) == 0
    assert [m.step for m in later.client.get_metric_history(run, "val_acc")] == [1, 2]
    parent = later.stage_run("coarse", {"trials": 4})
    assert parent == live.stage_run("coarse")
    assert later.client.get_run(parent).data.params == {"trials": "4"}
    other_study = open_tracker(replace(target, study_id="s2"), print)
    assert other_study.trial_run("coarse", "a_00001", {}, "") != run

    bare = live.trial_run("coarse", "a_00002", {}, "00002")  # the driver killed before params
    params = {"lr": 0.01, "log10_lr": -2.0}
    assert open_tracker(target, print).trial_run("coarse", "a_00002", params, "") == bare
    assert live.client.get_run(bare).data.params == {"lr": "0.01", "log10_lr": "-2.0"}


def test_an_unreachable_tracking_server_stops_the_study_before_any_trial(tmp_path, cache_dir):
    study = tmp_path / "study"
    uri = f"http://127.0.0.1:{free_port()}"
    proc = babysit_here(
        "run", "faces", "--data", FACES, "--budget", "smoke", "--study-dir", study,
        "--tracking-uri", uri, cache=cache_dir,
    )  # fmt: skip
    assert_one_line_error(proc, f"--tracking-uri '{uri}'", "start the server or fix the URI")
    assert "data " not in proc.stdout and not (study / "ray").exists()
    assert not (study / "spec.yaml").exists()


def test_a_tracking_uri_of_an_unknown_kind_is_one_line(tmp_path, cache_dir):
    proc = babysit_here(
        "search", "faces", "--stage", "coarse", "--study-dir", tmp_path / "s",
        "--tracking-uri", "bogus://nowhere", cache=cache_dir,
    )  # fmt: skip
    assert_one_line_error(proc, "--tracking-uri 'bogus://nowhere'")


@pytest.mark.slow
def test_every_metric_a_trial_reports_reaches_sqlite_exactly_once(tmp_path, cache_dir, study_dir):
    """Live records from the trials, then the stage's record from its tables: each epoch's
    metrics once, however the two overlap."""
    spec_file = tmp_path / "many.yaml"
    spec_file.write_text(MANY_SPEC)
    folder = StudyFolder(study_dir)
    spec = load_spec(str(spec_file)).with_changes(trial={"data": str(FACES)})
    lines: list[str] = []
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=LocalStageRunner())
    session.run_new(spec, folder, Step.COARSE, BudgetName.FULL, options, skip_sanity=True)
    client = MlflowClient(embedded_uri(folder.path))
    ((_, children),) = tree(embedded_uri(folder.path), "many").values()
    epochs = folder.read_stage("coarse").epochs
    expected = {
        (row["trial_id"], int(row["epoch"]), k)
        for row in epochs.to_dict("records")
        for k in epoch_metrics(row)
    }
    stored = set()
    for run in children:
        trial = run.data.tags["trial_id"]
        for key in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == len({m.step for m in history}), f"{trial} {key} twice"
            stored |= {(trial, m.step, key) for m in history}
    assert len(children) == 8 and len(expected) >= 8 * 2 * 6 and stored == expected


@pytest.mark.slow
def test_a_real_mlflow_server_gets_the_whole_tree_even_when_it_dies_mid_study(
    tmp_path, cache_dir, empty_store
):
    shutil.copy(empty_store, tmp_path / "server.db")  # migrated once for the session
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    folder = StudyFolder(tmp_path / "study")
    spec = load_spec("faces").with_changes(
        trial={"data": str(FACES)},
        search_space={"lr": {"loguniform": [1e-4, 1e-1]}},
        outputs={"report": False},  # the model still goes up to the server
    )
    out: list[str] = []
    restarted = contextlib.ExitStack()

    def echo(line: str) -> None:
        """The study's own output; the first finished trial kills the server (so the coarse
        stage ends while it is away), the fine stage brings a new one up on the same store."""
        out.append(line)
        if line.startswith("coarse   1/4 done"):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if line.startswith("fine   2 trials"):
            restarted.enter_context(mlflow_server(tmp_path, port))

    options = session.SessionOptions(
        cache_dir, tracking_uri=uri, echo=echo, runner=LocalStageRunner()
    )
    with mlflow_server(tmp_path, port) as server, restarted:
        session.run_new(spec, folder, Step.FINAL, BudgetName.SMOKE, options, skip_sanity=True)
        text = "\n".join(out)
        assert f"{uri} unreachable" in text and "recorded after the outage" in text, text
        assert_study_recorded(uri, "faces", folder.path)
        assert folder.read_state().tracking_uri == uri


@pytest.mark.slow
def test_a_damaged_store_is_named_and_rebuilt_from_the_study_folder(
    finished_study, tmp_path, cache_dir
):
    study = tmp_path / "copy"
    shutil.copytree(finished_study[0], study)
    store = study / "mlflow" / "mlflow.db"
    store.write_bytes(store.read_bytes()[:5000])  # `truncate -s 5000`
    for command in ("sync", "resume"):
        assert_one_line_error(
            babysit_here(command, study, cache=cache_dir),
            f"the study's MLflow store {store} cannot be opened",
            f"`babysit sync {study} --rebuild` sets the store aside",
        )
    rebuilt = babysit_here("sync", study, "--rebuild", cache=cache_dir)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "mlflow   recorded: sanity, coarse, fine, final" in rebuilt.stdout
    (aside,) = study.glob("mlflow.set-aside-*")
    assert (aside / "mlflow.db").stat().st_size == 5000  # kept, as it was
    assert_study_recorded(embedded_uri(study), "report", study)
    server = babysit_here(
        "sync", study, "--rebuild", "--tracking-uri", "http://127.0.0.1:9", cache=cache_dir
    )
    assert_one_line_error(server, "--rebuild: study", "a server's store")


@pytest.mark.slow
def test_a_moved_study_is_served_on_localhost_with_its_own_artifacts(
    finished_study, tmp_path, cache_dir
):
    """MLflow records absolute artifact paths: the copy must not lean on the original. `babysit
    ui` serves it on 127.0.0.1 and opens on its runs; a busy port is one line."""
    original = tmp_path / "original"
    shutil.copytree(finished_study[0], original)
    assert babysit_here("sync", original, cache=cache_dir).returncode == 0  # its own paths
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    synced = babysit_here("sync", moved, cache=cache_dir)
    assert synced.returncode == 0, synced.stderr
    assert f"its store now points at {moved}" in synced.stdout and "up to date" in synced.stdout
    resumed = babysit_here("resume", moved, cache=cache_dir)
    assert resumed.returncode == 0 and "final  already trained" in resumed.stdout
    port = free_port()
    ui = subprocess.Popen(
        [*BABYSIT, "ui", str(moved), "--port", str(port)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )  # fmt: skip
    try:
        line = ui.stdout.readline()
        assert f"at http://127.0.0.1:{port}" in line
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        wait_for(f"{api}/experiments/get-by-name?experiment_name=report")
        with urllib.request.urlopen(f"{api}/experiments/get-by-name?experiment_name=report") as r:
            experiment = json.load(r)["experiment"]
        assert f"/#/experiments/{experiment['experiment_id']}/runs" in line  # opens on the runs
        tags = {t["key"]: t["value"] for t in experiment["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI pages
        assert "one child run per trial" in tags["mlflow.note.content"]
        busy = babysit_here("ui", moved, "--port", str(port), cache=tmp_path)
        assert_one_line_error(busy, f"--port {port}", "pass another --port")

        client = MlflowClient(f"http://127.0.0.1:{port}")
        stages = tree(f"http://127.0.0.1:{port}", "report")
        final = stages["final"][0].info.run_id
        listed = {a.path for a in client.list_artifacts(final)}
        assert {"filters.png", "report.html", "checkpoint.pt"} <= listed
        coarse = {a.path for a in client.list_artifacts(stages["coarse"][0].info.run_id)}
        assert "coarse.parquet" in coarse
        query = f"run_id={final}&path=filters.png"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/get-artifact?{query}") as reply:
            assert reply.read(4) == b"\x89PNG"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    assert_one_line_error(
        babysit_here("ui", tmp_path / "nothing", cache=tmp_path), "holds no study"
    )


@pytest.mark.slow
def test_the_logged_final_model_loads_and_predicts_without_pickle(finished_study, cache_dir):
    """Served from a copy of its run's artifacts, in a process that has no study: the logged
    model rebuilds the net on this machine's device and gives the checkpoint's logits."""
    study, out = finished_study
    assert "Failed to validate serving input example" not in out
    client = MlflowClient(embedded_uri(study))
    (final,) = client.search_runs(
        [client.get_experiment_by_name("report").experiment_id], "tags.stage = 'final'"
    )
    uri = final.data.tags["model"]
    script = f"""
import json, os, mlflow, numpy as np, torch
assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in os.environ
mlflow.set_tracking_uri({embedded_uri(study)!r})
example = np.load({str(study / "final" / "input_example.npy")!r})
model = mlflow.pyfunc.load_model({uri!r})
logits = model.predict(example)
print(json.dumps({{"shape": list(logits.shape), "logits": logits.tolist()}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_ALLOW")}
    served = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=120,
    )
    assert served.returncode == 0, served.stderr[-2000:]
    got = json.loads(served.stdout.splitlines()[-1])
    assert got["shape"] == [2, 2]

    saved = torch.load(study / "final" / "checkpoint.pt", weights_only=True)
    example = np.load(study / "final" / "input_example.npy")
    model = model_from(saved["model_args"])  # the checkpoint alone rebuilds its model
    model.load_state_dict(saved["model"])
    with torch.no_grad():
        expected = model.eval()(torch.as_tensor(example)).numpy()
    assert np.allclose(got["logits"], expected, atol=1e-5)
