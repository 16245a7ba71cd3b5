"""The study folder's records read back as they were written: summary.json of a finished study
is the typed Summary the pipeline returned."""

from __future__ import annotations

import json

from orchestrator.study.folder import StudyFolder
from orchestrator.study.records import BestTrial, Summary


def test_a_finished_study_summary_reads_back_equal(finished_study):
    path, _ = finished_study
    summary = StudyFolder(path).read_summary()
    raw = json.loads((path / "summary.json").read_text())
    assert summary is not None and summary.to_dict() == raw
    assert Summary.from_dict(raw) == summary
    assert isinstance(summary.coarse, BestTrial) and isinstance(summary.fine, BestTrial)
    assert summary.final is not None and summary.final.round == "fine"
    assert summary.final.config["lr"] == summary.fine.params["lr"]
    assert set(raw["coarse"]) == {"trial_id", "val_acc", "val_acc_se", "lr", "l2", "augment"}
