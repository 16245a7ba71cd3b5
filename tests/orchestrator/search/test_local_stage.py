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
