"""Whole studies on a real local Ray runtime: planted faults in-process, and the CLI as a user
runs it (including a driver killed with SIGKILL and resumed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from ray import cloudpickle

from orchestrator.console import ConsoleObserver
from orchestrator.names import Step
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.search.stage import StageRun
from orchestrator.session import load_study_data
from orchestrator.study.folder import StudyFolder
from orchestrator.study.narrowing_decision import PENALTY_LIMIT
from orchestrator.study.observer import StudyObserver
from orchestrator.study.pipeline import Study
from orchestrator.study.spec import parse_spec
from tests.conftest import FACES, QUICK, assert_one_line_error, babysit_here
from tests.orchestrator import planted
from trainables.datasets import load_data
from trainables.errors import BabysitterError
from trainables.sanity import penalty_limit

FAULTS_SPEC = (
    f"""
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
    + QUICK
)


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


KILL_SPEC = (
    """
name: killme
trial: {dataset: faces, train_subset: 600}
search_space:
  lr: {loguniform: [1.0e-3, 1.0e-1]}
  l2: {loguniform: [1.0e-5, 1.0e-3]}
coarse: {trials: 8, epochs: 2, scheduler: {type: fifo}}
fine: {trials: 2, epochs: 2}
"""
    + QUICK
)


@pytest.mark.slow
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
    proc = babysit_here("run", "faces", "--fuse", "fast", cache=cache_dir)
    assert_one_line_error(proc, "resources.fuse='fast'", "must be auto, off or a group size K")
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


L2_SPEC = (
    f"""
name: l2cap
trial: {{dataset: faces, data: {FACES}, train_subset: 300}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  l2: {{loguniform: [{{low}}, 10.0]}}
coarse: {{trials: 6, epochs: 1, scheduler: {{type: fifo}}}}
fine: {{trials: 3, epochs: 1, scheduler: {{type: fifo}}}}
narrowing: {{top_k: 3}}
"""
    + QUICK
)


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
