"""A running stage's progress line: its best val_acc is the tables' (each trial's last epoch)."""

from __future__ import annotations

import re

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
