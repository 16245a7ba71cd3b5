import pandas as pd

from orchestrator.search.results import TrialRecord, history_frame, stage_tables, trial_status


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
