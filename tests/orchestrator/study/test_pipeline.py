"""Whole studies on a real local Ray runtime: planted faults in-process, and the CLI as a user
runs it (including a driver killed with SIGKILL and resumed)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray import cloudpickle

from orchestrator.console import ConsoleObserver
from orchestrator.names import Step
from orchestrator.search.epoch_log import read_log
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.search.stage import StageRun
from orchestrator.session import load_study_data
from orchestrator.study.folder import StudyFolder
from orchestrator.study.narrowing_decision import PENALTY_LIMIT
from orchestrator.study.observer import StudyObserver
from orchestrator.study.pipeline import Study
from orchestrator.study.spec import PRESETS, parse_spec
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import FACES, assert_one_line_error, babysit_here, babysit_started
from tests.orchestrator import planted
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded
from trainables.datasets import load_data
from trainables.errors import BabysitterError
from trainables.sanity import penalty_limit
from trainables.status import FINISHED

FAULTS_SPEC = f"""
name: faults
trial: {{dataset: faces, data: {FACES}, train_subset: 600}}
search_space:
  lr: {{grid: [{planted.FAILS_ONCE_LR}, 1000.0, {planted.ALWAYS_FAILS_LR}, {planted.TORN_LR}]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 1, epochs: 3, search: grid, scheduler: {{type: fifo}}}}
fine: {{trials: 1, epochs: 2, search: grid, scheduler: {{type: fifo}}}}
final: {{epochs: 2}}
retries: 1
min_rung_steps: 1
"""


@pytest.mark.slow
def test_a_trial_that_raises_is_retried_from_its_checkpoint_and_the_stage_completes(
    tmp_path, cache_dir, local_ray
):
    cloudpickle.register_pickle_by_value(planted)
    markers = tmp_path / "markers"
    markers.mkdir()
    spec, data = load_study_data(parse_spec(FAULTS_SPEC, "faults"), "full", cache_dir, print)
    folder = StudyFolder(tmp_path / "study")
    folder.create(spec, Step.FINAL)
    runner = RayStageRunner(planted.flaky_trainable(markers))
    lines: list[str] = []
    observers = [ConsoleObserver(lines.append)]
    study = Study(folder, spec, data, runner, observers, skip_sanity=True)
    summary = study.run(Step.COARSE).to_dict()  # the fine stage and final: test_study_api

    coarse = pd.read_parquet(folder.results / "coarse.parquet").set_index("lr")
    once = coarse.loc[planted.FAILS_ONCE_LR]
    assert once["status"] == "completed" and once["retries"] == 1
    assert (markers / f"3-{planted.FAILS_ONCE_LR:g}.starts").read_text() == "0\n1\n"
    epochs = pd.read_parquet(folder.results / "coarse_epochs.parquet")
    assert list(epochs[epochs["trial_id"] == once["trial_id"]]["epoch"]) == [1, 2, 3]

    assert coarse.loc[1000.0, "status"] == "diverged"
    always = coarse.loc[planted.ALWAYS_FAILS_LR]
    assert always["status"] == "errored" and "planted: this trial always fails" in always["error"]

    torn = coarse.loc[planted.TORN_LR]  # its stored checkpoint was cut short: begun again
    assert torn["status"] == "completed" and torn["retries"] == 1
    assert (markers / f"3-{planted.TORN_LR:g}.starts").read_text() == "0\n1\n"
    assert list(epochs[epochs["trial_id"] == torn["trial_id"]]["epoch"]) == [1, 2, 3]
    (warned,) = [line for line in lines if line.startswith("warning  coarse trial")]
    assert f"trial {torn['trial_id']}: its checkpoint " in warned
    assert warned.endswith("epoch-2.pt is missing or cannot be read; the trial starts again")

    assert summary["coarse"]["lr"] in (planted.FAILS_ONCE_LR, planted.TORN_LR)


def auto_lr_spec(folder: Path) -> Path:
    """The faces preset with ``lr: auto``, an l2 range that lets a small study learn, and a
    coarse stage of 8 two-epoch trials (FIFO), long enough to be killed in the middle."""
    text = (PRESETS / "faces.yaml").read_text()  # lr: auto, as the preset says
    text = text.replace("l2: {loguniform: [1.0e-5, 10.0]}", "l2: {loguniform: [1.0e-5, 1.0e-2]}")
    assert text.count("auto") == 1 and "1.0e-2]" in text
    spec = yaml.safe_load(text)
    spec["trial"]["train_subset"] = 600
    spec["coarse"] = {"trials": 8, "epochs": 2, "scheduler": {"type": "fifo"}}
    spec["fine"] = {"trials": 4, "epochs": 2}  # widened past the probe's range, some diverge
    spec["final"] = {"epochs": 2}
    spec["narrowing"] = {"top_k": 3}
    spec["min_rung_steps"] = 1
    (folder / "faces.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "faces.yaml"


def _committed_finished(experiment: Path) -> set[str]:
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


def _reports(experiment: Path) -> dict[str, int]:
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
        while not ready(_committed_finished(experiment), _reports(experiment)):
            assert driver.poll() is None, "the stage ended before the kill"
            assert time.monotonic() < deadline, "the stage did not get there in time"
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        out = driver.communicate()[0]
    return out, _committed_finished(experiment), _reports(experiment)


@pytest.mark.slow
def test_a_study_killed_mid_stage_resumes_then_reruns_as_a_no_op(tmp_path, cache_dir, study_dir):
    """The whole recipe on Ray as a user runs it: sanity checks and `lr: auto`, the driver
    SIGKILLed during the coarse stage, `babysit resume`, then every command on the result."""
    study = study_dir
    spec_file = auto_lr_spec(tmp_path)
    args = ["run", spec_file, "--data", FACES, "--study-dir", study]
    killed, finished, reports = run_until_killed(
        args, cache_dir, study / "ray" / "coarse", lambda finished, _: len(finished) >= 2
    )
    before = {trial: n for trial, n in reports.items() if trial in finished}
    assert killed.index("sanity   passed") < killed.index("coarse   0/8 done")
    loss = float(re.search(r"PASS  initial_loss +loss ([0-9.]+),", killed).group(1))
    assert abs(loss - math.log(2)) < 0.1
    for check in ("regularization", "overfit", "lr_probe", "update_ratio", "beats_chance"):
        assert re.search(rf"PASS  {check} ", killed), killed
    assert killed.count("   expected ") == 7
    assert killed.count("if not: ") + killed.count("means: ") == 7
    sanity = json.loads((study / "sanity.json").read_text())
    low, high = sanity["lr_range"]
    assert sanity["passed"] and f"proposed coarse lr range: [{low:.0e}, {high:.0e}]" in killed
    assert f"sanity   lr: auto -> coarse lr loguniform[{low:g}, {high:g}]" in killed
    assert (study / "sanity_lr_probe.png").read_bytes()[:4] == b"\x89PNG"
    assert not (study / "results" / "coarse.parquet").exists()

    proc = babysit_here("resume", study, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "resuming the interrupted stage" in out and "sanity   checking" not in out
    for fragment in ("coarse   8/8 done", "fine     4/4 done", "narrow", "chosen", "test accuracy"):
        assert fragment in out
    coarse = pd.read_parquet(study / "results" / "coarse.parquet")
    assert len(coarse) == coarse["trial_id"].nunique() == 8
    assert set(coarse["status"]) == {"completed"} and (coarse["train_subset"] == 600).all()
    assert coarse["lr"].between(low, high).all()
    after = _reports(study / "ray" / "coarse")
    assert len(before) >= 2 and before.keys() < after.keys() and len(after) == 8
    for name, reports in before.items():
        assert after[name] == reports, f"{name} was rerun after the kill"
    epochs = pd.read_parquet(study / "results" / "coarse_epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert "lr: auto" in (study / "spec.yaml").read_text()
    fine = pd.read_parquet(study / "results" / "fine.parquet")
    assert len(fine) == 4 and set(fine["status"]) <= set(FINISHED)
    narrowing = json.loads((study / "narrowing.json").read_text())
    assert [d["name"] for d in narrowing["decisions"]] == ["lr", "l2"]
    assert fine["lr"].between(*narrowing["fine_space"]["lr"]["loguniform"]).all()
    test = json.loads((study / "final" / "test_metrics.json").read_text())
    assert sum(test["support"]) == 1396
    store = embedded_uri(study)
    assert_study_recorded(store, "faces", study)  # no run twice, none left RUNNING

    again = babysit_here(*args, cache=cache_dir)
    assert again.returncode == 0, again.stderr
    assert "coarse already finished" in again.stdout and "final  already trained" in again.stdout
    assert "sanity   checking" not in again.stdout and "coarse lr loguniform" in again.stdout
    shown = babysit_here("sanity", *args[1:], cache=cache_dir)
    assert shown.returncode == 0 and "sanity   already passed" in shown.stdout
    assert "PASS  overfit" in shown.stdout and "passed in" not in shown.stdout
    assert json.loads((study / "sanity.json").read_text()) == sanity
    assert pd.read_parquet(study / "results" / "coarse.parquet").equals(coarse)
    assert_study_recorded(store, "faces", study)

    synced = babysit_here("sync", study, cache=cache_dir)
    assert synced.returncode == 0 and "up to date" in synced.stdout
    state = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**state, "recorded": []}))
    synced = babysit_here("sync", study, cache=cache_dir)
    assert synced.returncode == 0 and "recorded: sanity, coarse, fine, final" in synced.stdout
    assert_study_recorded(store, "faces", study)  # sent again: still once each
    elsewhere = babysit_here(
        "resume", study, "--tracking-uri", "http://127.0.0.1:9", cache=cache_dir
    )
    assert_one_line_error(elsewhere, "records to 'sqlite:///", "drop the option")

    export = tmp_path / "trials.csv"
    proc = babysit_here("results", study, "--out", export, cache=cache_dir)
    assert proc.returncode == 0 and "wrote 12 rows" in proc.stdout
    table = pd.read_csv(export)
    assert {"trial_id", "status", "lr", "l2", "val_acc", "stage"} <= set(table.columns)
    printed = babysit_here("results", study, "--stage", "fine", "--epochs", cache=cache_dir)
    assert printed.returncode == 0 and "update_ratio/conv1" in printed.stdout

    other = babysit_here(*args, "--budget", "demo", cache=cache_dir)
    assert_one_line_error(other, "holds a study with budget='full', now budget='demo'")


KILL_SPEC = """
name: killme
trial: {dataset: faces, train_subset: 600}
search_space:
  lr: {loguniform: [1.0e-3, 1.0e-1]}
  l2: {loguniform: [1.0e-5, 1.0e-3]}
coarse: {trials: 8, epochs: 2, scheduler: {type: fifo}}
fine: {trials: 2, epochs: 2}
"""


def test_study_errors_are_one_line(tmp_path, cache_dir):
    assert_one_line_error(
        babysit_here("run", "nosuch", cache=cache_dir), "STUDY 'nosuch' is neither a preset"
    )
    bad = tmp_path / "bad.yaml"
    assert "trials: 8" in KILL_SPEC
    bad.write_text(KILL_SPEC.replace("trials: 8", "trials: 0"))
    assert_one_line_error(
        babysit_here("run", bad, "--data", FACES, cache=cache_dir), "coarse.trials=0", str(bad)
    )
    assert_one_line_error(
        babysit_here("resume", tmp_path / "empty", cache=cache_dir), "holds no study (no spec.yaml)"
    )
    assert_one_line_error(
        babysit_here("results", tmp_path / "empty", cache=cache_dir), "holds no study"
    )
    spec_file = tmp_path / "ok.yaml"
    spec_file.write_text(KILL_SPEC)
    proc = babysit_here(
        "search",
        spec_file,
        "--stage",
        "fine",
        "--data",
        FACES,
        "--study-dir",
        tmp_path / "s",
        cache=cache_dir,
    )
    assert_one_line_error(proc, "run `babysit search", "--stage coarse` first")
    proc = babysit_here("run", "faces", "--cpus-per-trial", "0", cache=cache_dir)
    assert_one_line_error(proc, "resources.cpus_per_trial=0.0", "greater than 0")
    gpu_study = tmp_path / "gpu"
    proc = babysit_here(
        "run",
        "faces",
        "--data",
        FACES,
        "--budget",
        "smoke",
        "--gpus-per-trial",
        "0.5",
        "--study-dir",
        gpu_study,
        cache=cache_dir,
    )
    assert_one_line_error(proc, "--gpus-per-trial 0.5 asks for more than the largest Ray node")
    assert not gpu_study.exists()


@pytest.mark.slow
def test_optuna_tpe_searches_through_ray_tune(tmp_path, cache_dir, local_ray):
    spec = parse_spec(
        f"""
name: tpe
trial: {{dataset: faces, data: {FACES}, train_subset: 300}}
search_space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}, optimizer: {{choice: [sgd, adam]}}}}
coarse: {{trials: 4, epochs: 1, search: optuna}}
fine: {{trials: 1, epochs: 1}}
""",
        "tpe",
    )
    data = load_data(spec.base_config(), cache_dir)
    run = StageRun(
        "coarse", spec.coarse, spec.space(), spec.base_config(), spec.resources, 0, tmp_path
    )
    trials = RayStageRunner().run(run, data, StudyObserver()).trials
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials["lr"].between(1e-3, 1e-2).all() and trials["lr"].nunique() == 4
    assert set(trials["optimizer"]) <= {"sgd", "adam"}


def local_study(
    spec, tmp_path: Path, cache_dir: Path, trainable=None, observers=()
) -> tuple[Study, StudyFolder]:
    """``spec`` in a new study folder, run by the in-process runner, sanity checks skipped."""
    folder = StudyFolder(tmp_path / "study")
    folder.create(spec, Step.FINAL)
    runner = LocalStageRunner(trainable) if trainable else LocalStageRunner()
    data = load_data(spec.base_config(), cache_dir)
    return Study(folder, spec, data, runner, observers, skip_sanity=True), folder


def test_a_coarse_stage_where_every_trial_diverges_stops_the_study_in_one_line(tmp_path, cache_dir):
    spec = parse_spec(
        f"""
name: explode
trial: {{dataset: faces, data: {FACES}, train_subset: 300}}
search_space: {{lr: {{loguniform: [1.0e+3, 1.0e+4]}}}}
coarse: {{trials: 2, epochs: 1}}
fine: {{trials: 1, epochs: 1}}
""",
        "explode",
    )
    study, folder = local_study(spec, tmp_path, cache_dir)
    with pytest.raises(BabysitterError, match=r"coarse stage has no usable trial \(2 diverged\)"):
        study.run()
    assert not folder.narrowing_file.exists()


L2_SPEC = f"""
name: l2cap
trial: {{dataset: faces, data: {FACES}, train_subset: 300}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  l2: {{loguniform: [{{low}}, 10.0]}}
coarse: {{trials: 6, epochs: 1, scheduler: {{type: fifo}}}}
fine: {{trials: 3, epochs: 1, scheduler: {{type: fifo}}}}
narrowing: {{top_k: 3}}
"""


def test_no_stage_searches_l2_where_its_penalty_swamps_the_loss(tmp_path, cache_dir):
    spec = parse_spec(L2_SPEC.replace("{low}", "1.0e-5"), "l2cap")
    lines: list[str] = []
    study, folder = local_study(
        spec, tmp_path, cache_dir, planted.scored_by_l2, [ConsoleObserver(lines.append)]
    )
    limit = penalty_limit(spec.base_config(), study.data, PENALTY_LIMIT)
    assert 1e-5 < limit < 1.0  # a third of the spec's decades or more lie above it
    study.run(Step.FINE)

    for stage in ("coarse", "fine"):
        l2 = pd.read_parquet(folder.results / f"{stage}.parquet")["l2"]
        assert len(l2) > 0 and (l2 <= limit).all(), (stage, list(l2), limit)
    capped = [line for line in lines if line.startswith("search   l2 ")]
    assert capped == [
        f"search   l2 loguniform[1e-05, 10] -> loguniform[1e-05, {limit:.3g}]: above it the "
        "initial L2 penalty exceeds 10 x ln C"
    ]
    assert folder.read_narrowing("fine").space()["l2"].values[1] <= limit


def test_an_l2_range_wholly_above_the_penalty_limit_is_refused_in_one_line(tmp_path, cache_dir):
    spec = parse_spec(L2_SPEC.replace("{low}", "5.0"), "l2cap")
    study, folder = local_study(spec, tmp_path, cache_dir)
    with pytest.raises(BabysitterError, match=r"search_space.l2=.* starts at or above .* give l2"):
        study.run()
    assert not (folder.results / "coarse.parquet").exists()
