"""The in-process stage runner interrupted at random points and resumed: the same stage as
an uninterrupted run, to the row (its rungs and finished trials are kept in the study)."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.ranking import rank
from orchestrator.search.rungs import read_decisions
from orchestrator.search.stage import StageRun
from orchestrator.study.observer import StudyObserver
from orchestrator.study.spec import parse_spec
from trainables.epoch import EpochReport
from trainables.status import TrialStatus

SPEC = """
name: planted
trial: {dataset: faces, train_subset: 300}
search_space: {lr: {loguniform: [1.0e-4, 1.0]}}
coarse: {trials: 10, epochs: 8, scheduler: {grace_period: 1, reduction_factor: 2}}
fine: {trials: 1, epochs: 1}
"""
TIMES = ["time_total_s", "timestamp", "seconds"]


def scored(config, data, *, on_epoch, checkpoint_path, resume) -> None:
    """Deterministic scores that cross between epochs, so that ASHA stops some trials late."""
    for epoch in range(1, config.epochs + 1):
        chance = random.Random(f"{config.lr:.12g}-{epoch}")
        metrics = {"epoch": epoch, "val_acc": chance.random(), "val_loss": chance.random()}
        on_epoch(EpochReport(epoch, metrics, TrialStatus.RUNNING))


class Interrupt:
    """``scored``, with Ctrl-C at its ``at``-th epoch report (counted over the stage), before
    the runner sees it or ``after`` it was judged at its rung (a stopped trial's end not yet
    written)."""

    def __init__(self, at: int, after: bool) -> None:
        self.at, self.after, self.seen = at, after, 0

    def __call__(self, config, data, *, on_epoch, **kwargs) -> None:
        def counted(report: EpochReport) -> None:
            self.seen += 1
            if self.seen == self.at and not self.after:
                raise KeyboardInterrupt
            try:
                on_epoch(report)
            finally:
                if self.seen == self.at:
                    raise KeyboardInterrupt

        scored(config, data, on_epoch=counted, **kwargs)


def stage(folder: Path) -> StageRun:
    spec = parse_spec(SPEC, "planted")
    return StageRun(
        "coarse", spec.coarse, spec.space(), spec.base_config(), spec.resources, 0, folder
    )


@pytest.mark.slow
def test_a_stage_interrupted_at_random_points_ends_as_an_uninterrupted_one(tmp_path):
    straight = LocalStageRunner(scored).run(stage(tmp_path / "straight"), None, StudyObserver())
    reports = len(straight.epochs)
    stopped = set(straight.trials.loc[straight.trials["status"] == "stopped_by_asha", "trial_id"])
    assert 3 <= len(stopped) < 10 and reports > 10  # ASHA stopped trials at several rungs
    chance = random.Random(0)
    for attempt in range(20):
        run = stage(tmp_path / f"interrupted-{attempt}")
        interrupts = 0
        for at in sorted(chance.sample(range(1, reports), chance.randint(1, 3)), reverse=True):
            try:
                interrupt = Interrupt(at, after=chance.random() < 0.5)
                LocalStageRunner(interrupt).run(run, None, StudyObserver())
            except KeyboardInterrupt:
                interrupts += 1
        assert interrupts >= 1
        resumed = LocalStageRunner(scored).run(run, None, StudyObserver())
        for mine, theirs in ((resumed.trials, straight.trials), (resumed.epochs, straight.epochs)):
            ids = {
                a: b
                for a, b in zip(mine["trial_id"].unique(), theirs["trial_id"].unique(), strict=True)
            }
            pd.testing.assert_frame_equal(
                mine.replace({"trial_id": ids}).drop(columns=TIMES, errors="ignore"),
                theirs.drop(columns=TIMES, errors="ignore"),
            )
        decisions = read_decisions(run.path / "asha.jsonl")
        judged = [(d.trial_id, d.rung) for d in decisions]
        assert len(judged) == len(set(judged))
        best = rank(resumed.trials).iloc[0]["lr"]
        assert best == rank(straight.trials).iloc[0]["lr"]


def slow_starters(config, data, *, on_epoch, checkpoint_path, resume) -> None:
    """Augmented trials score low early and win late; plain ones score high early."""
    for epoch in range(1, config.epochs + 1):
        late = min(1.0, 0.1 * epoch) * (0.9 + 0.1 * config.lr)
        val_acc = late if config.augment else 0.5 + 0.01 * config.lr
        metrics = {"epoch": epoch, "val_acc": val_acc, "val_loss": 1 - val_acc}
        on_epoch(EpochReport(epoch, metrics, TrialStatus.RUNNING))


WITHIN_SPEC = """
name: planted
trial: {dataset: faces}
search_space: {lr: {loguniform: [1.0e-4, 1.0]}, augment: {grid: [false, true]}}
coarse: {trials: 5, epochs: 8, scheduler: {grace_period: 1, reduction_factor: 3%s}}
fine: {trials: 1, epochs: 1}
"""


@pytest.mark.parametrize("within", ["", ", within: augment"])
def test_rungs_within_a_choice_keep_its_slow_starters(tmp_path, within):
    """Each augmented trial arrives after a plain twin that scores higher early and lower
    late: one set of rungs cuts them all at the first rung, the best config among them;
    with ``within: augment`` they compete with each other and the best of them wins."""
    spec = parse_spec(WITHIN_SPEC % within, "planted")
    run = StageRun("coarse", spec.coarse, spec.space(), spec.base_config(), spec.resources, 0,
                   tmp_path)  # fmt: skip
    trials = LocalStageRunner(slow_starters).run(run, None, StudyObserver()).trials
    augmented = trials[trials["augment"]].sort_values("lr")
    best = rank(trials).iloc[0]
    if within:
        assert best["trial_id"] == augmented["trial_id"].iloc[-1] and best["val_acc"] > 0.7
        groups = {d.group for d in read_decisions(run.path / "asha.jsonl")}
        assert groups == {"augment=False", "augment=True"}
    else:
        assert (augmented["status"] == "stopped_by_asha").all() and not best["augment"]


FUSED_SPEC = """
name: fused
trial: {dataset: faces, train_subset: 300, batch_size: 32, threads: 2}
search_space:
  lr: {loguniform: [1.0e-3, 0.3]}
  l2: {loguniform: [1.0e-5, 1.0e-2]}
  batch_norm: {choice: [false, true]}
coarse: {trials: 8, epochs: 4, scheduler: {grace_period: 1, reduction_factor: 2}}
fine: {trials: 1, epochs: 1}
"""


class Recorder(StudyObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def trial_started(self, stage, trial) -> None:
        self.seen.append(("started", trial.trial_id))

    def trial_epoch(self, stage, trial, row) -> None:
        self.seen.append(("epoch", trial.trial_id))


def fused_stage(folder: Path, faces_config, fuse: int | str = 4) -> StageRun:
    spec = parse_spec(
        FUSED_SPEC.replace("dataset: faces", f"dataset: faces, data: {faces_config.data}"), "fused"
    )
    resources = spec.resources.model_copy(update={"fuse": fuse})
    return StageRun("coarse", spec.coarse, spec.space(), spec.base_config(), resources, 0, folder)


@pytest.mark.slow
def test_a_fused_stage_gives_the_tables_and_rungs_of_an_unfused_one(
    tmp_path, faces_config, cache_dir
):
    from trainables.datasets import load_data

    run = fused_stage(tmp_path / "fused", faces_config)
    data = load_data(run.base, cache_dir)
    seen = Recorder()
    fused = LocalStageRunner().run(run, data, seen)
    alone = LocalStageRunner().run(
        fused_stage(tmp_path / "alone", faces_config, fuse="off"), data, StudyObserver()
    )

    for mine, theirs in ((fused.trials, alone.trials), (fused.epochs, alone.epochs)):
        assert list(mine.columns) == list(theirs.columns)
    assert len(fused.trials) == 8 and set(fused.trials["status"]) <= {
        "completed",
        "stopped_by_asha",
        "diverged",
    }
    assert (fused.trials["status"] == "stopped_by_asha").any()
    epochs = fused.epochs.groupby("trial_id")["epoch"].max()
    for trial_id, status in zip(fused.trials["trial_id"], fused.trials["status"], strict=True):
        assert (epochs[trial_id] == 4) == (status == "completed"), (trial_id, status)
    decisions = read_decisions(run.path / "asha.jsonl")
    assert {d.trial_id for d in decisions} == set(fused.trials["trial_id"])
    # members trained together: a trial started before another one's first epoch ended
    order = [e for e, _ in seen.seen]
    assert order[:2] == ["started", "started"]
    assert rank(fused.trials).iloc[0]["val_acc"] > 0.8


@pytest.mark.slow
def test_a_fused_stage_interrupted_mid_group_resumes_with_every_trial_once(
    tmp_path, faces_config, cache_dir
):
    from trainables.datasets import load_data
    from trainables.fused_training import train_fused

    run = fused_stage(tmp_path / "fused", faces_config)
    data = load_data(run.base, cache_dir)
    reports = 0

    def killed(configs, data, *, on_epoch, **kwargs):
        def counted(k, report):
            nonlocal reports
            reports += 1
            if reports == 7:
                raise KeyboardInterrupt
            return on_epoch(k, report)

        return train_fused(configs, data, on_epoch=counted, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        LocalStageRunner(fused=killed).run(run, data, StudyObserver())
    resumed = LocalStageRunner().run(run, data, StudyObserver())
    assert len(resumed.trials) == 8 and resumed.trials["trial_id"].is_unique
    assert not resumed.epochs.duplicated(["trial_id", "epoch"]).any()
    judged = [(d.trial_id, d.rung) for d in read_decisions(run.path / "asha.jsonl")]
    assert len(judged) == len(set(judged))


@pytest.mark.slow
def test_a_failed_group_retries_its_members_from_their_checkpoints(
    tmp_path, faces_config, cache_dir
):
    from trainables.datasets import load_data
    from trainables.fused_training import train_fused

    run = fused_stage(tmp_path / "fused", faces_config)
    run = StageRun(run.name, run.stage, run.space, run.base, run.resources, 1, run.storage)
    data = load_data(run.base, cache_dir)
    calls = []

    def fails_once(configs, data, *, on_epoch, resume, **kwargs):
        """Each group fails after its members' second epoch; its retry resumes them."""
        calls.append(resume)

        def failing(k, report):
            keep = on_epoch(k, report)
            if not resume and report.epoch == 2 and k == len(configs) - 1:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return keep

        return train_fused(configs, data, on_epoch=failing, resume=resume, **kwargs)

    tables = LocalStageRunner(fused=fails_once).run(run, data, StudyObserver())
    assert calls[:2] == [False, True]
    assert set(tables.trials["status"]) <= {"completed", "stopped_by_asha", "diverged"}
    assert not tables.epochs.duplicated(["trial_id", "epoch"]).any()
    assert (tables.trials["retries"] == 1).any()
    rows = tables.epochs.groupby("trial_id").size()
    completed = tables.trials[tables.trials["status"] == "completed"]["trial_id"]
    assert len(completed) and (rows[completed] == 4).all()  # resumed from epoch 2, none lost


@pytest.mark.slow
def test_a_fused_study_is_recorded_as_an_unfused_one(tmp_path, cache_dir, empty_store):
    """Coarse, fine and final with the stages' trials fused in fours: MLflow holds a stage run
    per round, a child per trial with its status and every epoch's metrics, as for any study."""
    from orchestrator import session
    from orchestrator.names import BudgetName, Step
    from orchestrator.study.folder import StudyFolder
    from orchestrator.tracking.sqlite_store import embedded_uri
    from tests.conftest import FACES, QUICK, seed_store
    from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded

    spec = parse_spec(
        f"""
name: fused
trial: {{dataset: faces, data: {FACES}, train_subset: 300, batch_size: 32, threads: 2}}
search_space:
  lr: {{loguniform: [1.0e-3, 0.1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 8, epochs: 3, scheduler: {{grace_period: 1, reduction_factor: 2}}}}
fine: {{trials: 4, epochs: 3}}
final: {{epochs: 2}}
narrowing: {{top_k: 3}}
min_rung_steps: 1
resources: {{fuse: 4}}
"""
        + QUICK,
        "fused",
    )
    folder = StudyFolder(seed_store(tmp_path / "study", empty_store))
    options = session.SessionOptions(cache_dir, echo=print, runner=LocalStageRunner())
    session.run_new(spec, folder, Step.FINAL, BudgetName.FULL, options, skip_sanity=True)
    assert_study_recorded(embedded_uri(folder.path), "fused", folder.path)
    coarse = folder.read_stage("coarse").trials
    assert len(coarse) == 8 and (coarse["status"] == "stopped_by_asha").any()
