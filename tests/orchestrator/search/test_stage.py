"""A running stage's progress line: its best val_acc is the tables' (each trial's last epoch)."""

from __future__ import annotations

import math
import re

import pytest

from orchestrator.search.stage import Tally
from orchestrator.study.folder import StudyFolder


def test_the_best_follows_the_trials_latest_scores_not_their_best_epochs():
    tally = Tally(total=2)
    assert tally.update(["running"], [0.77], 1.0).best == 0.77
    shown = tally.update(["completed"], [0.757], 2.0)  # the trial's last epoch fell back
    assert shown.best == 0.757 and shown.done == 1


def test_the_last_progress_line_agrees_with_the_stage_table(finished_study):
    path, out = finished_study
    folder = StudyFolder(path)
    for stage in ("coarse", "fine"):
        lines = [
            line for line in out.splitlines() if line.startswith(f"{stage} ") and " done |" in line
        ]
        said = re.search(r"best val_acc ([0-9.]+)", lines[-1]).group(1)
        trials = folder.read_stage(stage).trials
        usable = trials[trials["status"].isin(["completed", "stopped_by_asha"])]
        assert said == f"{usable['val_acc'].max():.4f}", (stage, lines[-1])


@pytest.mark.slow
def test_out_of_memory_and_nan_inf_or_missing_scores_leave_the_other_trials_going(
    tmp_path, local_ray, faces
):
    import cloudpickle

    from orchestrator.search.ray_stage import RayStageRunner
    from orchestrator.study.observer import StudyObserver
    from tests.orchestrator import planted

    cloudpickle.register_pickle_by_value(planted)
    run = planted.lr_grid_run(tmp_path, retries=1)
    tables = RayStageRunner(planted.misbehaving).run(run, faces, StudyObserver())
    trials = tables.trials.set_index("lr")
    assert len(trials) == 6 and trials.index.is_unique
    oom = trials.loc[0.5]
    assert oom["status"] == "errored" and oom["retries"] == 1
    assert "can't allocate memory" in oom["error"]
    assert trials.loc[0.6, "status"] == "completed" and trials.loc[0.6, "val_acc"] == 0.63
    for lr in (0.4, 0.3, 0.2):  # no usable score: never ranked, never a cutoff
        assert trials.loc[lr, "status"] in ("completed", "stopped_by_asha"), lr
        assert not math.isfinite(trials.loc[lr, "val_acc"]), lr
    cutoffs = trials["asha_cutoff"].dropna()
    assert cutoffs.map(math.isfinite).all()
