"""The study API in process, on the stage runner that needs no Ray: the steps, what observers
are told and in which order, resume, a folder written by the previous version, damaged files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator import session
from orchestrator.console import ConsoleObserver
from orchestrator.names import Step
from orchestrator.report.observer import ReportObserver
from orchestrator.search.groups import samples
from orchestrator.search.local_stage import LocalStageRunner, rungs_of
from orchestrator.search.stage import StageRun
from orchestrator.study.folder import StudyFolder
from orchestrator.study.observer import StudyObserver
from orchestrator.study.pipeline import Study
from orchestrator.study.spec import parse_spec
from orchestrator.tracking.observer import MlflowObserver
from orchestrator.tracking.record import tracking_target
from orchestrator.tracking.sqlite_store import embedded_uri
from orchestrator.tracking.store import connect
from tests.conftest import FACES, assert_one_line_error, babysit_here, seed_store
from tests.orchestrator.tracking.mlflow_checks import tree
from trainables.datasets import load_data
from trainables.errors import BabysitterError

SPEC = f"""
name: local
trial: {{dataset: faces, data: {FACES}, train_subset: 300, threads: 1}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 4, epochs: 3, scheduler: {{grace_period: 1, reduction_factor: 2}}}}
fine: {{trials: 2, epochs: 2}}
final: {{epochs: 2}}
narrowing: {{top_k: 3}}
min_rung_steps: 1  # plumbing, not judgement: no stretched rungs
"""
FIXTURE = Path(__file__).parents[2] / "fixtures" / "study-0945122"


class Recorder(StudyObserver):
    """Every hook call, by name, with its first argument."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []


def _recording(hook: str):
    def record(self, *args, **kwargs) -> None:
        self.calls.append((hook, args[0] if args else None))

    return record


for _hook in [n for n in dir(StudyObserver) if not n.startswith("_")]:
    setattr(Recorder, _hook, _recording(_hook))


class Broken(StudyObserver):
    def __init__(self) -> None:
        self.calls = 0

    def stage_started(self, run) -> None:
        self.calls += 1
        raise OSError("no room for the plot\nsecond line")


def without_ids(summary) -> dict:
    """The summary less the trial ids (a stage's ids are drawn from its folder)."""
    return {
        k: {f: v for f, v in part.items() if f != "trial_id"} if isinstance(part, dict) else part
        for k, part in summary.to_dict().items()
    }


class CountingRunner(LocalStageRunner):
    def __init__(self) -> None:
        super().__init__()
        self.stages: list[str] = []

    def run(self, run, data, events):
        self.stages.append(run.name)
        return super().run(run, data, events)


@pytest.fixture(scope="module")
def spec():
    return parse_spec(SPEC, "local")


@pytest.fixture(scope="module")
def data(spec, cache_dir):
    return load_data(spec.base_config(), cache_dir)


def run_study(path: Path, spec, data, observers=(), runner=None):
    folder = StudyFolder(path)
    folder.create(spec, Step.FINAL)
    runner = runner or LocalStageRunner()
    return folder, Study(folder, spec, data, runner, observers, skip_sanity=True).run()


@pytest.mark.slow
def test_a_study_runs_each_step_and_tells_its_observers_in_order(
    tmp_path, spec, data, cache_dir, empty_store
):
    recorder = Recorder()
    folder, summary = run_study(tmp_path / "watched", spec, data, [recorder])
    hooks = [name for name, _ in recorder.calls]
    milestones = [
        (name, arg)
        for name, arg in recorder.calls
        if name not in ("trial_started", "trial_epoch", "trial_finished", "stage_progress")
    ]
    assert [name for name, _ in milestones] == [
        "study_started", "sanity_skipped",
        "stage_started", "stage_ended", "step_finished", "stage_results", "narrowing_decided",
        "stage_started", "stage_ended", "step_finished", "stage_results",
        "final_started", "final_epoch", "final_epoch", "final_result", "step_finished",
        "study_finished",
    ]  # fmt: skip
    assert [a for n, a in milestones if n == "step_finished"] == ["coarse", "fine", "final"]
    coarse = folder.read_stage("coarse").trials
    assert hooks.count("trial_started") == hooks.count("trial_finished") == 4 + 2
    coarse_epochs = [a for n, a in recorder.calls if n == "trial_epoch" and a == "coarse"]
    assert len(coarse_epochs) == coarse["epochs_run"].sum() < 4 * 3  # ASHA stopped some
    assert "stopped_by_asha" in set(coarse["status"])
    assert summary.final.test_accuracy > 0.6
    assert json.loads(folder.summary_file.read_text()) == summary.to_dict()

    lines: list[str] = []
    broken = Broken()
    folder = StudyFolder(seed_store(tmp_path / "others", empty_store))
    folder.create(spec, Step.FINAL)
    tracker = connect(tracking_target(folder, spec, None, folder.study_id()), print)
    mlflow = MlflowObserver(tracker, folder, spec, print, figures_follow=True)
    report = ReportObserver(folder, cache_dir, print, then=mlflow.figures_saved)
    watchers = [broken, mlflow, ConsoleObserver(lines.append), report]  # MLflow hears first
    others = Study(folder, spec, data, LocalStageRunner(), watchers, skip_sanity=True).run()
    assert without_ids(others) == without_ids(summary)  # who watches changes nothing
    uri = embedded_uri(folder.path)
    runs = tree(uri, "local")
    for step in ("coarse", "fine", "final"):  # the report handed its figures over, in time
        saved = {path.name for path in folder.figures(step)}
        kept = {a.path for a in MlflowClient(uri).list_artifacts(runs[step][0].info.run_id)}
        assert saved and saved <= kept, (step, saved - kept)
    assert broken.calls == 1 and "study    local" in lines[0] and "chosen   " in "\n".join(lines)
    said = [line for line in lines if "Broken" in line]
    assert said == [
        "warning  Broken stopped watching: OSError in stage_started (no room for the plot); "
        "the study goes on, and the study folder keeps every record"
    ]


@pytest.mark.slow
def test_a_finished_study_runs_again_without_training_anything(tmp_path, spec, data):
    folder, first = run_study(tmp_path / "s", spec, data)
    recorder, runner = Recorder(), CountingRunner()
    again = Study(folder, spec, data, runner, [recorder], skip_sanity=True).run()
    assert runner.stages == [] and again.to_dict() == first.to_dict()
    hooks = [name for name, _ in recorder.calls]
    assert "stage_started" not in hooks and "final_epoch" not in hooks
    assert ("final_started", folder.path / "final") not in recorder.calls  # a config, not a path
    assert hooks.count("stage_results") == 2


def test_a_stage_draws_the_same_settings_from_its_seed(spec):
    run = StageRun(
        "coarse", spec.coarse, spec.space(), spec.base_config(), spec.resources, 0, Path("x")
    )
    assert rungs_of(run.stage).milestones == [2, 1]  # grace 1, factor 2, 3 epochs
    first, second = list(samples(run)), list(samples(run))
    assert first == second and len({s["lr"] for s in first}) == 4


@pytest.mark.slow
def test_a_folder_from_the_previous_version_resumes(tmp_path, cache_dir, empty_store):
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    seed_store(path, empty_store)
    spec_file = path / "spec.yaml"
    spec_file.write_text(
        "\n".join(
            f"  data: {FACES}" if line.startswith("  data: ") else line
            for line in spec_file.read_text().splitlines()
        )
        + "\n"
    )
    lines: list[str] = []
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=LocalStageRunner())
    summary = session.resume(StudyFolder(path), options)
    out = "\n".join(lines)
    assert "sanity" not in out.split("coarse")[0].replace("sanity ", "")  # not run again
    assert "coarse already finished" in out and "fine   2 trials x 2 epochs" in out
    assert "test accuracy" in out and summary.final.test_accuracy > 0
    folder = StudyFolder(path)
    assert len(folder.read_stage("fine").trials) == 2
    assert folder.read_state().recorded == ("sanity", "coarse", "fine", "final")
    assert folder.read_sanity().passed and folder.read_narrowing().top_k == 3


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("study.json", "restore it or start a new study"),
        ("sanity.json", "delete it to run the checks again"),
        ("narrowing.json", "delete it to narrow again from the previous round's results"),
        ("results/coarse.parquet", "delete coarse.parquet and coarse_epochs.parquet to rebuild"),
    ],
)
def test_a_damaged_file_in_the_study_folder_is_one_line_naming_it(tmp_path, cache_dir, name, fix):
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    damaged = path / name
    damaged.write_bytes(damaged.read_bytes()[:50])
    folder = StudyFolder(path)
    read = {
        "study.json": folder.read_state,
        "sanity.json": folder.read_sanity,
        "narrowing.json": folder.read_narrowing,
        "results/coarse.parquet": lambda: folder.read_stage("coarse"),
    }[name]
    with pytest.raises(BabysitterError, match=f"{damaged}: cannot be read .*; {fix}"):
        read()
    assert_one_line_error(babysit_here("resume", path, cache=cache_dir), str(damaged), fix)


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    folder = StudyFolder(path)
    state = folder.update_state(recorded=("sanity",))
    assert folder.read_state() == state
    folder.write_narrowing(folder.read_narrowing())
    folder.write_stage("coarse", folder.read_stage("coarse"))
    assert not [p for p in path.rglob("*") if ".tmp" in p.name]
    before = pd.read_parquet(FIXTURE / "results" / "coarse.parquet")
    assert folder.read_stage("coarse").trials.equals(before)
    old = json.loads((FIXTURE / "narrowing.json").read_text())  # written before rounds existed
    assert folder.read_narrowing().to_dict() == {
        **old,
        "source": "coarse",
        "into": "fine",
        "stop": "",
    }


def test_a_stage_interrupted_under_an_earlier_version_is_one_line(tmp_path, spec, data):
    """Tune pickles its callbacks with the experiment; the previous main's lived in modules
    that are gone, so its interrupted stage cannot be restored: say so and what to do."""
    from orchestrator.search.ray_stage import RayStageRunner

    folder = StudyFolder(tmp_path / "study")
    folder.create(spec, Step.FINAL)
    stage = folder.ray / "coarse"
    stage.mkdir(parents=True)
    (stage / "tuner.pkl").write_bytes(b"corchestrator.progress\nStageProgress\n.")
    study = Study(folder, spec, data, RayStageRunner(), skip_sanity=True)
    with pytest.raises(BabysitterError, match="saved by another babysitter version") as error:
        study.run()
    assert "delete that folder" in str(error.value) and str(stage) in str(error.value)


def test_a_damaged_final_checkpoint_is_one_line_and_the_report_still_opens(
    finished_study, tmp_path, cache_dir
):
    study = tmp_path / "damaged"
    shutil.copytree(finished_study[0], study)
    checkpoint = study / "final" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # `truncate -s 100`
    assert_one_line_error(
        babysit_here("resume", study, cache=cache_dir),
        f"{checkpoint}: damaged",
        f"delete {study / 'final'} and `babysit resume {study}` trains the final model again",
    )
    report = babysit_here("report", study, cache=cache_dir)
    assert report.returncode == 0, report.stderr
    assert f"{checkpoint} cannot be read" in (study / "report.html").read_text()


class StoppedUnderRunner(LocalStageRunner):
    """A runner stopped under its stage (another driver took it over): one trial never ran."""

    def run(self, run, data, events):
        tables = super().run(run, data, events)
        tables.trials.loc[0, "status"] = "pending"
        return tables


@pytest.mark.slow
def test_a_stage_with_a_trial_still_pending_writes_no_table(tmp_path, spec, data):
    with pytest.raises(BabysitterError, match=r"the coarse stage ended with trials not finished "
                       r"\(1 pending\); its table is not written: `babysit resume "):  # fmt: skip
        run_study(tmp_path / "s", spec, data, runner=StoppedUnderRunner())
    assert StudyFolder(tmp_path / "s").read_stage("coarse") is None
