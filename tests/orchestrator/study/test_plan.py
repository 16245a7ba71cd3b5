import pytest

from orchestrator.study.plan import CV_BELOW, plan_study
from orchestrator.study.spec import load_spec
from trainables.errors import ConfigError


def faces(**changes):
    return load_spec("faces").with_budget("demo").with_changes(**changes)


def test_on_small_data_every_rung_gets_the_minimum_optimizer_steps():
    """144 train / 16 val (a 200-image set): trials cross-validate on 160 images (128 per
    fold, 2 steps per epoch at batch 64), so the coarse stage's 3 epochs become 60."""
    spec = faces()
    plan = plan_study(spec, 144, 16)
    assert (plan.folds, plan.train_images, plan.steps_per_epoch) == (5, 128, 2)
    coarse, fine = plan.stage("coarse"), plan.stage("fine")
    assert coarse.scheduler.grace_period * plan.steps_per_epoch >= spec.min_rung_steps == 40
    assert (coarse.epochs, coarse.scheduler.grace_period) == (60, 20)
    assert (fine.epochs, fine.scheduler.grace_period) == (56, 21)
    assert plan.final_epochs == 10 * plan.stages["fine"].stretch == 70
    assert coarse.scheduler.reduction_factor == spec.coarse.scheduler.reduction_factor
    assert plan.custom and plan.departures[0] == (
        "coarse runs 60 epochs, not the 3 asked (x20), so that its first ASHA rung holds 40 "
        "optimizer steps (2 per epoch)"
    )


def test_on_large_data_the_spec_runs_as_written():
    plan = plan_study(faces(), 5024, 558)
    assert plan.folds == 0 and plan.steps_per_epoch == 79
    assert plan.stage("coarse") == faces().coarse and plan.final_epochs == 10
    assert plan.scoring(558) == "the validation split (558 images)"
    assert not plan.custom  # the demo budget as it is: its label stays


def test_a_top_k_that_is_not_below_the_coarse_trials_is_said():
    plan = plan_study(faces(coarse={"trials": 8}, narrowing={"top_k": 10}), 5024, 558)
    assert plan.custom and plan.departures == (
        "narrowing.top_k 10 is not below the 8 coarse trials, so every coarse trial shapes the "
        "fine ranges and they narrow little; set top_k below 8",
    )


def test_cross_validation_follows_the_spec():
    assert plan_study(faces(cv="off"), 144, 16).folds == 0
    assert plan_study(faces(cv=3), 5024, 558).folds == 3
    assert plan_study(faces(), 5000, CV_BELOW).folds == 0
    assert plan_study(faces(), 5000, CV_BELOW - 1).folds == 5
    with pytest.raises(ConfigError, match="cv=1: needs at least 2 folds; write cv: off"):
        faces(cv=1)


def test_the_smoke_budget_does_not_stretch_rungs():
    spec = load_spec("faces").with_budget("smoke")
    assert spec.min_rung_steps == 1
    assert plan_study(spec, 600, 558).stage("coarse") == spec.coarse


def test_a_searched_batch_size_plans_with_its_largest_value():
    spec = faces(search_space={"batch_size": {"grid": [32, 128]}}, coarse={"search": "grid"})
    assert plan_study(spec, 1280, 600).steps_per_epoch == 10
