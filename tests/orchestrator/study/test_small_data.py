"""A study on small data (120 images, 10 in the validation split): trials cross-validate, every
rung holds enough optimizer steps, ASHA still stops a cross-validated trial, the final model
trains on train + val, and no trial sees the test split."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from orchestrator.console import ConsoleObserver
from orchestrator.names import Step
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.session import load_study_data
from orchestrator.study.folder import StudyFolder
from orchestrator.study.pipeline import Study
from orchestrator.study.spec import parse_spec
from trainables.train import train

SPEC = """
name: tiny
trial: {{dataset: faces, data: {data}, batch_size: 32, threads: 1}}
search_space:
  lr: {{grid: [0.05, 1.0e-6]}}
coarse: {{trials: 1, epochs: 2, search: grid, scheduler: {{grace_period: 1, reduction_factor: 2}}}}
fine: {{trials: 1, epochs: 1, search: grid}}
final: {{epochs: 2, candidates: 2, seeds: 2}}
cv: 3
min_rung_steps: 10
"""


@pytest.mark.slow
def test_small_data_cross_validates_with_stretched_rungs_and_tests_only_at_the_end(
    tiny_faces, cache_dir, tmp_path
):
    spec, data = load_study_data(
        parse_spec(SPEC.format(data=tiny_faces), "tiny"), None, cache_dir, print
    )
    seen_test = []

    def spy(config, data, **kwargs):
        seen_test.append(len(data.test))
        return train(config, data, **kwargs)

    folder = StudyFolder(tmp_path / "study")
    folder.create(spec, Step.FINAL)
    lines = []
    study = Study(
        folder, spec, data, LocalStageRunner(spy), [ConsoleObserver(lines.append)], skip_sanity=True
    )
    summary = study.run().to_dict()

    pool = len(data.train) + len(data.val)  # 96: 64 per fold's training part, 2 steps of 32
    assert any("trials score by 3-fold cross-validation" in line for line in lines)
    assert "(budget custom)" in lines[0]  # it does not run as its spec asks, and says so:
    assert (
        "study    custom: coarse runs 10 epochs, not the 2 asked (x5), so that its first "
        "ASHA rung holds 10 optimizer steps (2 per epoch)" in lines
    )
    coarse = pd.read_parquet(folder.results / "coarse.parquet").set_index("lr")
    assert set(coarse["cv_folds"]) == {3} and set(coarse["epochs"]) == {10}
    assert coarse.loc[0.05, "status"] == "completed" and coarse.loc[0.05, "epochs_run"] == 10
    assert coarse.loc[1e-6, "status"] == "stopped_by_asha" and coarse.loc[1e-6, "epochs_run"] == 5
    epochs = pd.read_parquet(folder.results / "coarse_epochs.parquet")
    assert (epochs["folds"] == 3).all()
    assert epochs[[f"fold{i}/val_acc" for i in range(3)]].notna().all().all()

    assert seen_test and set(seen_test) == {0}  # the search never had the test images
    runs = pd.read_parquet(folder.candidates_file)
    assert sorted(runs["seed"]) == [0, 0, 1, 1] and runs["trial_id"].nunique() == 2
    assert any("candidates by mean val_acc over seeds" in line for line in lines)
    config = json.loads((folder.final / "config.json").read_text())
    assert (config["cv_folds"], config["epochs"], config["lr"]) == (0, 2 * 5, 0.05)
    final_epochs = [json.loads(line) for line in (folder.final / "metrics.jsonl").open()]
    assert len(final_epochs) == 10 and all("val_loss" not in row for row in final_epochs)
    report = json.loads((folder.final / "test_metrics.json").read_text())
    assert sum(report["support"]) == len(data.test) == 120 - pool
    chosen = summary["final"]["candidates"]  # best mean first: the config trained last
    assert set(chosen) == set(runs["trial_id"])
    means = [c["mean"] for c in chosen.values()]
    assert means == sorted(means, reverse=True)
    fine = pd.read_parquet(folder.results / "fine.parquet").set_index("trial_id")
    assert fine.loc[next(iter(chosen)), "lr"] == config["lr"]
