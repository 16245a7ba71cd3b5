"""Which trials of a stage train fused, in which groups, and the one line a stage that was asked
to fuse says when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.search.groups import fused_groups, plan_fusion, stage_trials
from orchestrator.search.stage import StageRun
from orchestrator.study.spec import parse_spec

SPEC = """
name: groups
trial: {{dataset: faces, train_subset: 300{trial}}}
search_space:
  lr: {{loguniform: [1.0e-3, 0.3]}}
  {knob}
coarse: {{trials: 10, epochs: 2{search}}}
fine: {{trials: 1, epochs: 1}}
resources: {{fuse: {fuse}, gpus_per_trial: {gpus}}}
"""


def stage(
    tmp_path: Path,
    fuse="4",
    gpus=0,
    knob="l2: {loguniform: [1.0e-5, 1.0e-2]}",
    trial="",
    search="",
    cv=0,
) -> tuple[StageRun, list]:
    text = SPEC.format(fuse=fuse, gpus=gpus, knob=knob, trial=trial, search=search)
    spec = parse_spec(text, "groups")
    run = StageRun(
        "coarse", spec.coarse, spec.space(), spec.base_config(), spec.resources, 0, tmp_path
    )
    base = run.trial_base().replace(cv_folds=cv)  # the study sets it on small data
    return run, [base.replace(**t.config) for t in stage_trials(run, [])]


def no_knee(config, most):
    raise AssertionError("the knee is measured only for auto on GPU trials")


def test_a_stage_fuses_in_groups_of_k_by_what_its_trials_share(tmp_path):
    run, configs = stage(tmp_path, knob="width: {choice: [1, 2]}")
    fusion = plan_fusion(run, configs, no_knee)
    trials = stage_trials(run, [])
    by_id = {t.trial_id: c for t, c in zip(trials, configs, strict=True)}
    groups = fused_groups(trials, by_id, 4)
    assert (fusion.size, fusion.line) == (4, f"10 trials fused in {len(groups)} groups of up to 4")
    assert sorted(t.trial_id for g in groups for t in g) == sorted(by_id)
    for group in groups:
        assert 1 <= len(group) <= 4 and len({by_id[t.trial_id].width for t in group}) == 1
    widths = [by_id[t.trial_id].width for t in trials]
    assert len(groups) == sum(-(-widths.count(w) // 4) for w in (1, 2))
    assert [len(g) for g in fused_groups(trials, by_id, 1)] == [1] * 10  # unfused: in order


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (dict(fuse="off"), ""),
        (dict(fuse="auto"), ""),  # CPU trials: off, and nothing to explain
        (dict(fuse=1), ""),
        (
            dict(search=", search: optuna"),
            "trains unfused: search: optuna draws each trial from the results before it "
            "(random fuses)",
        ),
        (
            dict(cv=2),
            "trains unfused: cv_folds=2: cross-validated trials train one fold after another",
        ),
        (
            dict(knob="batch_size: {int: [16, 4096]}"),
            None,  # every trial its own batch size: nothing to fuse with
        ),
    ],
)
def test_a_stage_that_cannot_fuse_trains_unfused_and_says_why(tmp_path, changes, line):
    run, configs = stage(tmp_path, **changes)
    fusion = plan_fusion(run, configs, no_knee)
    assert fusion.size == 1
    if line is None:
        assert fusion.line.startswith("trains unfused: their batch_size differ (members may ")
    else:
        assert fusion.line == line


def test_auto_on_gpu_trials_measures_the_knee_for_the_largest_group(tmp_path):
    run, configs = stage(tmp_path, fuse="auto", gpus=0.5, knob="augment: {choice: [false, true]}")
    asked = []

    def knee(config, most):
        asked.append(most)
        return 8, {1: 20000.0, 2: 39000.0, 4: 75000.0, 8: 120000.0, 16: 125000.0}

    fusion = plan_fusion(run, configs, knee)
    augmented = sum(c.augment for c in configs)
    assert asked == [max(augmented, 10 - augmented)]
    groups = -(-augmented // 8) + -(-(10 - augmented) // 8)
    assert fusion.size == 8 and fusion.line == (
        f"10 trials fused in {groups} groups of up to 8 (member-images/s measured: K=1 20k, "
        "K=2 39k, K=4 75k, K=8 120k, K=16 125k)"
    )
    flat = plan_fusion(run, configs, lambda config, most: (1, {1: 20000.0, 2: 21000.0}))
    assert (flat.size, flat.line) == (
        1,
        "trains unfused: fusing did not pay here (member-images/s: K=1 20k, K=2 21k)",
    )
