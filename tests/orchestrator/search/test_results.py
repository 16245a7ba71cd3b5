import math

import pandas as pd
import pytest

from orchestrator.search.results import (
    StageTables,
    TrialRecord,
    disagreement,
    history_frame,
    stage_tables,
    trial_status,
)
from orchestrator.study.folder import StudyFolder
from trainables.errors import BabysitterError


def test_statuses_tell_asha_stops_from_completions_and_divergence():
    assert trial_status("TERMINATED", {"epoch": 5, "trial_status": "completed"}, 5) == "completed"
    assert (
        trial_status("TERMINATED", {"epoch": 2, "trial_status": "running"}, 5) == "stopped_by_asha"
    )
    assert trial_status("TERMINATED", {"epoch": 1, "trial_status": "diverged"}, 5) == "diverged"
    assert trial_status("ERROR", {"epoch": 3}, 5) == "errored"
    assert trial_status("RUNNING", {"epoch": 3}, 5) == "running"
    assert trial_status("PENDING", {}, 5) == "pending"


def test_a_trial_row_keeps_what_judges_it_and_the_folds_per_epoch():
    epochs = [
        {
            "epoch": e,
            "val_acc": acc,
            "val_loss": loss,
            "val_acc_se": 0.05,
            "folds": 2,
            "val_loss_initial": 0.69,
            "fold0/val_acc": acc,
            "fold1/val_acc": acc,
            "ignored": 1,
        }
        for e, acc, loss in ((1, 0.6, 0.5), (2, 0.8, 0.3), (3, 0.7, 0.4))
    ]
    record = TrialRecord("t0", "completed", {"lr": 0.01}, history_frame(epochs))
    tables = stage_tables("coarse", [record], {"l2": 0.0})
    row = tables.trials.iloc[0]
    assert (row["val_acc"], row["best_val_acc"], row["min_val_loss"]) == (0.7, 0.8, 0.3)
    assert (row["val_acc_se"], row["val_loss_initial"], row["folds"]) == (0.05, 0.69, 2)
    assert {"fold0/val_acc", "fold1/val_acc"} <= set(tables.epochs.columns)
    assert "ignored" not in tables.epochs.columns
    assert isinstance(tables.trials, pd.DataFrame)


def planted_tables(**changes) -> StageTables:
    epochs = [{"epoch": e, "val_acc": 0.5 + e / 10, "trial_status": "running"} for e in (1, 2, 3)]
    tables = stage_tables(
        "coarse", [TrialRecord("t0", "completed", {"lr": 0.01}, history_frame(epochs))],
        {"epochs": 3},
    )  # fmt: skip
    for column, value in changes.items():
        tables.trials.loc[0, column] = value
    return tables


@pytest.mark.parametrize(
    ("changes", "drop", "said"),
    [
        ({}, None, None),
        (  # seen after a crash and a resume: stopped, 0 epochs, no metrics, epoch 1 logged
            {"status": "stopped_by_asha", "epochs_run": 0, "val_acc": math.nan},
            [2, 3],
            "trial t0 (stopped_by_asha): epochs_run 0 but 1 epoch rows",
        ),
        ({}, [2], "trial t0 (completed): its epoch rows are epochs [1, 3], not 1 to 2"),
        ({"val_acc": 0.2}, None, "trial t0 (completed): val_acc 0.2 but its last epoch's is 0.8"),
    ],
)
def test_a_stage_table_that_disagrees_with_its_epoch_rows_is_refused(tmp_path, changes, drop, said):
    tables = planted_tables(**changes)
    if drop is not None:
        epochs = tables.epochs[~tables.epochs["epoch"].isin(drop)].reset_index(drop=True)
        tables = StageTables(tables.trials, epochs)
    folder = StudyFolder(tmp_path)
    assert disagreement(tables) == said
    if said is None:
        folder.write_stage("coarse", tables)
        assert folder.read_stage("coarse").trials.equals(tables.trials)
        return
    with pytest.raises(BabysitterError, match="coarse stage's table disagrees") as caught:
        folder.write_stage("coarse", tables)
    assert said in str(caught.value) and f"babysit resume {tmp_path}" in str(caught.value)
    assert not folder.stage_done("coarse")
