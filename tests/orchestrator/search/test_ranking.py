import pandas as pd

from orchestrator.search.ranking import CHANCE, NOT_LEARNING, PENALTY, rank


def trials(**columns):
    n = len(columns["val_acc"])
    base = {
        "trial_id": [f"t{i}" for i in range(n)],
        "status": ["completed"] * n,
        "val_acc_se": [0.0] * n,
        "val_loss": [0.3] * n,
        "val_loss_initial": [0.69] * n,
        "min_val_loss": [0.3] * n,
        "val_loss_se": [0.02] * n,
        "train_loss": [0.3] * n,
        "train_penalty": [0.01] * n,
        "train_acc": [0.9] * n,
        "chance_acc": [0.5] * n,
        "epochs_run": [3] * n,
    }
    return pd.DataFrame({**base, **columns})


def order(frame):
    return list(rank(frame)["trial_id"])


def test_diverged_and_errored_trials_never_rank_and_completed_ones_come_first():
    frame = trials(
        status=["stopped_by_asha", "completed", "diverged", "errored", "completed"],
        val_acc=[0.99, 0.90, 1.0, 1.0, 0.95],
    )
    assert order(frame) == ["t4", "t1", "t0"]


def test_near_ties_at_the_top_are_broken_by_validation_loss_not_trial_order():
    frame = trials(
        val_acc=[0.75, 0.70, 0.50, 0.69],
        val_acc_se=[0.11, 0.11, 0.11, 0.11],
        val_loss=[0.40, 0.30, 0.20, 0.35],
        min_val_loss=[0.40, 0.30, 0.20, 0.35],
    )
    assert order(frame) == ["t1", "t3", "t0", "t2"]  # 0.50 is beyond 0.75's error
    shuffled = frame.iloc[[3, 2, 0, 1]]
    assert order(shuffled) == ["t1", "t3", "t0", "t2"]


def test_exact_ties_go_to_the_simpler_config():
    frame = trials(val_acc=[0.8, 0.8, 0.8], train_penalty=[0.1, 0.01, 0.01], epochs_run=[3, 3, 1])
    assert order(frame) == ["t2", "t1", "t0"]


def test_a_trial_that_learned_nothing_ranks_below_every_one_that_did():
    """The issue's case: 16 validation images, every coarse trial's val loss still at ln 2,
    and the 'best' accuracy (0.75) from an l2 of 7.7 whose training loss was the penalty."""
    frame = trials(
        val_acc=[0.75, 0.5625, 0.6, 0.55],
        val_acc_se=[0.1, 0.11, 0.11, 0.11],
        val_loss=[0.69, 0.69, 0.45, 0.5],
        min_val_loss=[0.688, 0.685, 0.45, 0.5],
        train_loss=[1369.0, 0.69, 0.5, 0.5],
        train_penalty=[1368.5, 0.0, 0.01, 0.01],
        train_acc=[0.5, 0.5, 0.8, 0.52],
    )
    ranked = rank(frame)
    assert list(ranked["trial_id"]) == ["t2", "t0", "t3", "t1"]  # flagged ones: same rules
    flags = dict(zip(ranked["trial_id"], ranked["flag"], strict=True))
    assert flags == {"t0": NOT_LEARNING, "t1": NOT_LEARNING, "t2": "", "t3": CHANCE}
    healthy_penalty = trials(val_acc=[0.9, 0.6], train_loss=[5.0, 0.5], train_penalty=[4.0, 0.0])
    ranked = rank(healthy_penalty)
    assert list(ranked["trial_id"]) == ["t1", "t0"] and ranked["flag"].iloc[1] == PENALTY


def test_a_model_that_fits_its_data_is_healthy_though_its_small_loss_is_mostly_penalty():
    """Measured at the end of a 200-image study's final run: train loss 0.133, penalty 0.102,
    train accuracy 1.0: the penalty is 77 % of the loss but far below ln 2."""
    frame = trials(val_acc=[0.9], train_loss=[0.133], train_penalty=[0.102], train_acc=[1.0])
    assert list(rank(frame)["flag"]) == [""]


def test_tables_from_before_the_measures_existed_still_rank_by_score():
    frame = pd.DataFrame(
        {"trial_id": ["a", "b"], "status": ["completed"] * 2, "val_acc": [0.8, 0.9]}
    )
    ranked = rank(frame)
    assert list(ranked["trial_id"]) == ["b", "a"] and list(ranked["flag"]) == ["", ""]
