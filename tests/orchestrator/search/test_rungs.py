"""ASHA's rule as both stage runners apply it: Ray's decisions, each written down, and read
back by a stage restored after an interruption."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pandas as pd
import pytest
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.schedulers.trial_scheduler import TrialScheduler

from orchestrator.search.rungs import Rungs, decision_text, read_decisions


def test_a_trial_below_the_cutoff_of_the_scores_before_it_is_stopped():
    rungs = Rungs.asha(grace=1, factor=2, epochs=3)
    assert rungs.milestones == [2, 1]
    first = rungs.decide("a", 1, 0.9)
    assert not first.stopped and first.compared == 0 and math.isnan(first.cutoff)
    below = rungs.decide("b", 1, 0.5)
    assert below.stopped and below.cutoff == 0.9 and below.compared == 1  # median of [0.9]
    late = rungs.decide("c", 1, 0.6)
    assert late.stopped and late.cutoff == 0.7 and late.compared == 2  # median of [0.9, 0.5]
    assert rungs.decide("a", 1, 0.1) is None  # judged once a rung
    assert rungs.decide("a", 2, 0.99).rung == 2
    assert set(rungs.stopping()) == {"b", "c"}
    assert decision_text(rungs.stopping()["c"].columns()) == (
        "stopped at epoch 1: val_acc 0.6000 < cutoff 0.7000 from 2 earlier trials at that rung"
    )
    assert decision_text({"asha_rung": math.nan}) == ""


def test_the_decisions_match_rays_asha_on_a_random_stream():
    stream = random.Random(7)
    rungs, bracket = Rungs.asha(1, 3, 27), _Bracket(1, 27, 3, 0)
    epochs = {f"t{i}": 0 for i in range(40)}
    stopped = set()
    while live := [t for t, e in epochs.items() if t not in stopped and e < 27]:
        trial = stream.choice(live)
        epochs[trial] += 1
        score = stream.random()
        if epochs[trial] == 27:  # the scheduler ends a trial at max_t without its bracket
            continue
        ours = rungs.decide(trial, epochs[trial], score)
        theirs = bracket.on_result(SimpleNamespace(trial_id=trial), epochs[trial], score)
        assert (ours is not None and ours.stopped) == (theirs == TrialScheduler.STOP)
        if theirs == TrialScheduler.STOP:
            stopped.add(trial)
    assert 10 < len(stopped) < 40  # the stream exercised the rule both ways


def test_a_restored_stage_reads_its_rungs_back_and_skips_a_cut_line(tmp_path):
    log = tmp_path / "asha.jsonl"
    before = Rungs.asha(1, 2, 4, log)
    before.decide("a", 1, 0.9)
    before.decide("b", 1, 0.4)
    with log.open("a") as out:
        out.write('{"trial_id": "c", "rung"')  # the driver killed mid-line
    after = Rungs.asha(1, 2, 4, log)
    assert after.recorded[""][1] == {"a": 0.9, "b": 0.4}
    assert after.decide("c", 1, 0.6).cutoff == before.decide("c", 1, 0.6).cutoff  # same cut
    lines = log.read_text().splitlines()  # the cut line dropped, not glued to the next one
    assert [json.loads(line)["trial_id"] for line in lines] == ["a", "b", "c", "c"]


def test_a_trial_stopped_before_an_interruption_stays_stopped_and_no_rung_is_decided_twice(
    tmp_path,
):
    log = tmp_path / "asha.jsonl"
    before = Rungs.asha(1, 2, 8, log)  # rungs at 1, 2, 4
    before.decide("a", 1, 0.9)
    stopped = before.decide("b", 1, 0.5)
    before.decide("a", 2, 0.95)
    assert stopped.stopped
    after = Rungs.asha(1, 2, 8, log)  # a restored stage: its trials report from their checkpoints
    assert after.decide("b", 1, 0.99) == stopped  # a better score on the rerun changes nothing
    assert after.decide("b", 2, 0.99) == stopped
    assert after.decide("a", 1, 0.1) is None and after.decide("a", 2, 0.1) is None
    assert after.decide("a", 3, 0.1) is None  # between rungs
    assert after.decide("a", 4, 0.97).rung == 4
    assert [(d.trial_id, d.rung) for d in read_decisions(log)] == [
        ("a", 1), ("b", 1), ("a", 2), ("a", 4)
    ]  # fmt: skip


def test_within_a_choice_a_slow_starter_faces_only_its_own_kind(tmp_path):
    """With ``within: augment`` an augmented trial's early score is cut against the augmented
    trials before it, not against the quicker plain ones; a restored stage keeps the groups."""
    log = tmp_path / "asha.jsonl"
    rungs = Rungs.asha(1, 3, 5, log)
    for trial, score in (("p1", 0.50), ("p2", 0.48), ("p3", 0.52)):
        rungs.decide(trial, 1, score, "augment=False")
    assert rungs.decide("a1", 1, 0.35, "augment=True").compared == 0  # the first of its kind
    slow = rungs.decide("a2", 1, 0.40, "augment=True")
    assert not slow.stopped and (slow.cutoff, slow.compared) == (0.35, 1)
    after = Rungs.asha(1, 3, 5, log)
    lost = after.decide("a3", 1, 0.30, "augment=True")
    assert lost.stopped and lost.compared == 2 and lost.group == "augment=True"
    assert lost.text().endswith("from 2 earlier trials with augment=True at that rung")
    plain = Rungs.asha(1, 3, 5)
    for trial, score in (("p1", 0.50), ("p2", 0.48), ("p3", 0.52), ("a1", 0.35)):
        plain.decide(trial, 1, score)
    assert plain.decide("a2", 1, 0.40).stopped  # one set of rungs: the slow starter is cut


@pytest.mark.slow
@pytest.mark.parametrize("fuse", ["off", 3])
def test_ray_stops_trials_by_these_rungs_and_the_tables_say_why(tmp_path, local_ray, faces, fuse):
    """On Tune, and with the trials fused in threes (members judged at their rungs as they
    report, in stack order)."""
    import cloudpickle

    from orchestrator.search.ray_stage import RayStageRunner
    from orchestrator.study.observer import StudyObserver
    from tests.orchestrator import planted

    cloudpickle.register_pickle_by_value(planted)
    run = planted.lr_grid_run(tmp_path, fuse=fuse)
    runner = RayStageRunner(planted.scored_by_lr, fused=planted.scored_group_by_lr)
    trials = runner.run(run, faces, StudyObserver()).trials
    assert (run.path / "fused.json").exists() == (fuse != "off")
    stopped = trials[trials["status"] == "stopped_by_asha"]
    assert len(stopped) >= 2  # later trials, lower scores: below the rungs' cutoffs
    assert stopped["asha_rung"].notna().all()
    assert (stopped["asha_score"] < stopped["asha_cutoff"]).all()
    assert (stopped["asha_rung"] == stopped["epochs_run"]).all() and (
        stopped["asha_compared"] >= 1
    ).all()
    assert trials.loc[trials["status"] == "completed", "asha_rung"].isna().all()
    log = read_decisions(run.path / "asha.jsonl")
    assert {d.trial_id for d in log if d.stopped} == set(stopped["trial_id"])
    replayed = Rungs.asha(1, 2, 3)  # the log is the rule applied in the order results came
    assert repr([replayed.decide(d.trial_id, d.rung, d.score) for d in log]) == repr(log)


@pytest.mark.slow
def test_asha_decides_after_a_restore_as_it_would_have_without_one(tmp_path, local_ray, faces):
    """Ray's own ASHA starts empty after a restore (ray-project/ray#30838); ours reads its
    rungs back from the stage's log, so the same trials are stopped at the same cutoffs."""
    import os

    import cloudpickle
    import ray

    from orchestrator.search.ray_stage import RayStageRunner
    from orchestrator.search.stage import StageRun
    from orchestrator.study.observer import StudyObserver
    from orchestrator.study.spec import parse_spec
    from tests.conftest import FACES
    from tests.orchestrator import planted

    cloudpickle.register_pickle_by_value(planted)
    spec = parse_spec(
        f"""
name: restore
trial: {{dataset: faces, data: {FACES}, train_subset: 300}}
search_space: {{lr: {{grid: [0.5, 0.6, 0.4, 0.3, 0.45, 0.2, 0.35, 0.1]}}}}
coarse: {{trials: 1, epochs: 3, search: grid, scheduler: {{grace_period: 1, reduction_factor: 2}}}}
fine: {{trials: 1, epochs: 1}}
resources: {{max_concurrent: 1}}
""",
        "restore",
    )

    def stage(folder):
        return StageRun(
            "coarse", spec.coarse, spec.space(), spec.base_config(), spec.resources, 0, folder
        )

    straight = RayStageRunner(planted.scored_by_lr).run(
        stage(tmp_path / "a"), faces, StudyObserver()
    )
    interrupted = RayStageRunner(
        planted.interrupts_driver(os.getpid(), tmp_path / "interrupted", at_lr=0.45)
    )
    with pytest.raises(KeyboardInterrupt):  # Tune saved its state and ended the stage
        interrupted.run(stage(tmp_path / "b"), faces, StudyObserver())
    log = tmp_path / "b" / "coarse" / "asha.jsonl"
    before = read_decisions(log)
    assert len(before) >= 3
    ray.shutdown()  # a resumed study runs in a new Ray session, without the old one's folders
    ray.init("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    resumed = interrupted.run(stage(tmp_path / "b"), faces, StudyObserver()).trials
    after = read_decisions(log)
    assert after[: len(before)] == before  # every decision made before is kept unchanged
    judged = [(d.trial_id, d.rung) for d in after]
    assert len(judged) == len(set(judged))  # and none is made twice

    def decisions(trials):
        stopped = trials[trials["status"] == "stopped_by_asha"].set_index("lr")
        return stopped[["asha_rung", "asha_cutoff", "asha_compared"]].sort_index()

    assert len(decisions(straight.trials)) >= 3
    pd.testing.assert_frame_equal(decisions(resumed), decisions(straight.trials))


def test_nan_and_inf_scores_never_break_the_rungs():
    rungs = Rungs.asha(1, 2, 4)
    assert not rungs.decide("nan", 1, math.nan).stopped  # no score: not judged below anyone
    assert not rungs.decide("inf", 1, math.inf).stopped
    low = rungs.decide("low", 1, 0.1)  # judged against the finite scores only
    assert math.isnan(low.cutoff) and low.compared == 0 and not low.stopped
    assert rungs.decide("high", 1, 0.9).compared == 1 and rungs.decide("mid", 1, 0.4).stopped
