import pandas as pd

from orchestrator.search.results import rank, trial_status


def test_statuses_tell_asha_stops_from_completions_and_divergence():
    assert trial_status("TERMINATED", {"epoch": 5, "trial_status": "completed"}, 5) == "completed"
    assert (
        trial_status("TERMINATED", {"epoch": 2, "trial_status": "running"}, 5) == "stopped_by_asha"
    )
    assert trial_status("TERMINATED", {"epoch": 1, "trial_status": "diverged"}, 5) == "diverged"
    assert trial_status("ERROR", {"epoch": 3}, 5) == "errored"
    assert trial_status("RUNNING", {"epoch": 3}, 5) == "running"
    assert trial_status("PENDING", {}, 5) == "pending"


def test_diverged_and_errored_trials_never_rank_and_completed_ones_come_first():
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "e"],
            "status": ["stopped_by_asha", "completed", "diverged", "errored", "completed"],
            "val_acc": [0.99, 0.90, 1.0, 1.0, 0.95],
        }
    )
    assert list(rank(trials)["trial_id"]) == ["e", "b", "a"]
