import math

import pytest

from orchestrator.search.narrowing import narrow
from orchestrator.search.space import Range
from trainables.errors import ConfigError

LR = Range("lr", 1e-6, 1e-3, log=True)
L2 = Range("l2", 1e-5, 10.0, log=True)


def trials(rows):
    return [
        {"trial_id": f"t{i}", "status": "completed", "val_acc": acc, "lr": lr, "l2": l2}
        for i, (acc, lr, l2) in enumerate(rows)
    ]


def test_best_on_the_lower_lr_boundary_widens_downwards():
    rows = trials([(0.9, 1.2e-6, 1e-3), (0.8, 3e-6, 1e-2), (0.7, 1e-5, 1e-4), (0.1, 5e-4, 1e-3)])
    lr, _ = narrow([LR, L2], rows, top_k=3)
    assert lr.new.low < LR.low and "lower boundary" in lr.reason
    assert math.log10(lr.new.low) == pytest.approx(-7.5)
    assert lr.new.high < LR.high
    assert lr.trial_ids == ("t0", "t1", "t2")


def test_best_on_the_upper_lr_boundary_widens_upwards():
    rows = trials([(0.95, 9e-4, 1e-3), (0.9, 5e-4, 1e-2), (0.2, 1e-6, 1e-4)])
    lr, _ = narrow([LR, L2], rows, top_k=2)
    assert lr.new.high > LR.high and "upper boundary" in lr.reason


def test_best_in_the_middle_narrows_within_the_old_range():
    rows = trials([(0.9, 3e-5, 1e-3), (0.85, 5e-5, 3e-3), (0.8, 2e-5, 2e-3), (0.3, 9e-4, 5.0)])
    lr, l2 = narrow([LR, L2], rows, top_k=3)
    for decision, old in ((lr, LR), (l2, L2)):
        assert old.low < decision.new.low < decision.new.high < old.high
        assert decision.new.span < old.span / 2
        assert "narrowed around the top 3" in decision.reason
    assert lr.new.low < 2e-5 and lr.new.high > 5e-5


def test_diverged_and_errored_trials_never_count():
    rows = trials([(0.99, 3e-4, 1e-3), (0.98, 1e-4, 1e-3), (0.5, 3e-5, 1e-3)])
    rows[0]["status"], rows[1]["status"] = "diverged", "errored"
    (lr,) = narrow([LR], rows, top_k=1)
    assert lr.trial_ids == ("t2",)
    with pytest.raises(ValueError, match="no completed trials"):
        narrow([LR], rows[:2])


def test_ranges_reject_impossible_bounds():
    with pytest.raises(ConfigError, match="need finite low < high"):
        Range("lr", 1e-3, 1e-6, log=True)
    with pytest.raises(ConfigError, match="a log range needs low > 0"):
        Range("l2", 0.0, 1.0, log=True)


def test_a_runner_up_on_a_boundary_widens_too():
    rows = trials([(0.9, 3e-4, 1e-3), (0.89, 9.5e-4, 1e-2), (0.6, 1e-5, 1e-4), (0.5, 2e-5, 1)])
    lr, _ = narrow([LR, L2], rows, top_k=4)
    assert lr.new.high > LR.high and "a top-3 trial sits on the upper boundary" in lr.reason
