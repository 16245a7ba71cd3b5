import math

import pandas as pd
import pytest

from orchestrator.search.narrowing import Limit, narrow, narrow_choice
from orchestrator.search.ranking import rank
from orchestrator.search.space import Param, Range
from trainables.errors import ConfigError

LR = Range("lr", 1e-6, 1e-3, log=True)
L2 = Range("l2", 1e-5, 10.0, log=True)


def ranked(rows, se=0.0, **columns):
    """Planted completed trials (val_acc, lr, l2), ranked as the study ranks them."""
    frame = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(len(rows))],
            "status": "completed",
            "val_acc": [r[0] for r in rows],
            "val_acc_se": se,
            "lr": [r[1] for r in rows],
            "l2": [r[2] for r in rows],
            **columns,
        }
    )
    return rank(frame).to_dict("records")


def test_best_on_the_lower_lr_boundary_widens_downwards_by_at_most_a_decade():
    rows = ranked([(0.9, 1.2e-6, 1e-3), (0.8, 3e-6, 1e-2), (0.7, 1e-5, 1e-4), (0.1, 5e-4, 1e-3)])
    lr, _ = narrow([LR, L2], rows, top_k=3)
    assert lr.new.low < LR.low and "lower boundary" in lr.reason and "widened down" in lr.reason
    assert math.log10(lr.new.low) == pytest.approx(-7.0)  # half the span would be 1.5 decades
    assert lr.new.high < LR.high
    assert lr.trial_ids == ("t0", "t1", "t2")


def test_best_in_the_middle_narrows_within_the_old_range():
    rows = ranked([(0.9, 3e-5, 1e-3), (0.85, 5e-5, 3e-3), (0.8, 2e-5, 2e-3), (0.3, 9e-4, 5.0)])
    lr, l2 = narrow([LR, L2], rows, top_k=3)
    for decision, old in ((lr, LR), (l2, L2)):
        assert old.low < decision.new.low < decision.new.high < old.high
        assert decision.new.span < old.span / 2
        assert "narrowed around the top 3" in decision.reason
    assert lr.new.low < 2e-5 and lr.new.high > 5e-5


def test_a_tied_trial_on_a_boundary_does_not_widen_the_range():
    """16 validation images: 0.75 and 0.69 are one standard error (0.11) apart."""
    rows = ranked([(0.75, 9.5e-4, 1e-3), (0.69, 1e-4, 1e-2), (0.65, 5e-5, 1e-4)], se=0.11)
    lr, _ = narrow([LR, L2], rows, top_k=3)
    assert lr.new.high <= LR.high
    assert "tied with t1 inside (0.690 +- 0.110): not widened" in lr.reason


def test_a_clearly_better_trial_on_a_boundary_widens_the_range():
    rows = ranked([(0.95, 9.5e-4, 1e-3), (0.80, 1e-4, 1e-2), (0.78, 5e-5, 1e-4)], se=0.02)
    lr, _ = narrow([LR, L2], rows, top_k=3)
    assert lr.new.high == pytest.approx(1e-2)  # one decade at most
    assert "better than t1 inside (0.800 +- 0.020) beyond its error" in lr.reason


def test_widening_stops_at_the_lr_probes_limit():
    rows = ranked([(0.95, 9.5e-4, 1e-3), (0.80, 1e-4, 1e-2)], se=0.02)
    (lr,) = narrow([LR], rows, limits={"lr": Limit(3e-3, "the lr probe explodes at 3e-03")})
    assert lr.new.high == pytest.approx(3e-3)
    assert "widened upwards to 0.003 (the lr probe explodes at 3e-03)" in lr.reason
    (lr,) = narrow([LR], rows, limits={"lr": Limit(5e-4, "the lr probe explodes at 5e-04")})
    assert lr.new.high == pytest.approx(LR.high)
    assert "not widened (the lr probe explodes at 5e-04)" in lr.reason


def test_flagged_trials_do_not_steer_the_narrowing_while_healthy_ones_exist():
    """The issue's case: the 'best' accuracy came from a trial that learned nothing (its
    penalty was the loss) at the top of the l2 range."""
    rows = ranked(
        [(0.75, 5e-4, 7.7), (0.69, 3e-4, 1e-3), (0.66, 2e-4, 3e-4)],
        se=0.11,
        train_loss=[1369.0, 0.4, 0.45],
        train_penalty=[1368.0, 0.01, 0.01],
    )
    _, l2 = narrow([LR, L2], rows, top_k=3)
    assert "t0" not in l2.trial_ids
    assert l2.new.high < 1.0


def test_no_usable_trial_is_an_error():
    with pytest.raises(ValueError, match="no completed trials"):
        narrow([LR], [])


def test_ranges_reject_impossible_bounds():
    with pytest.raises(ConfigError, match="need finite low < high"):
        Range("lr", 1e-3, 1e-6, log=True)
    with pytest.raises(ConfigError, match="a log range needs low > 0"):
        Range("l2", 0.0, 1.0, log=True)


def test_a_tied_accuracy_with_a_clearly_lower_val_loss_on_the_boundary_widens():
    """Measured on a 200-image set: accuracies 0.719 and 0.706 (+- 0.036) tie, but the val
    losses 0.577 and 0.616 (+- 0.013 each) say the boundary trial is better."""
    rows = ranked(
        [(0.719, 9.5e-4, 1e-3), (0.706, 3.7e-4, 1e-2), (0.706, 2.8e-4, 1e-4)],
        se=0.036,
        val_loss=[0.577, 0.616, 0.631],
        val_loss_se=0.013,
    )
    lr, _ = narrow([LR, L2], rows, top_k=3)
    assert lr.new.high == pytest.approx(1e-2)
    assert "val loss is lower beyond error (0.577 vs 0.616 +- 0.018)" in lr.reason
    same = ranked(
        [(0.719, 9.5e-4, 1e-3), (0.706, 3.7e-4, 1e-2)],
        se=0.036,
        val_loss=[0.600, 0.616],
        val_loss_se=0.013,
    )
    (lr,) = narrow([LR], same, top_k=2)
    assert lr.new.high <= LR.high and "not widened" in lr.reason


def test_a_worse_trial_on_a_boundary_is_named_so():
    rows = ranked([(0.996, 1e-4, 1e-3), (0.987, 9.5e-4, 1e-2)], se=0.003)
    (lr,) = narrow([LR], rows, top_k=2)
    assert "worse than t0 inside (0.996 +- 0.003): not widened" in lr.reason


AUGMENT = Param("augment", "choice", (False, True))


def augmented(scores, augment, epochs_run=3, se=0.02):
    rows = [(s, 1e-4, 1e-3) for s in scores]
    return ranked(rows, se=se, augment=augment, epochs_run=epochs_run)


def test_a_choice_keeps_what_the_top_trials_hold_and_drops_a_value_that_lost_beyond_error():
    rows = augmented([0.9, 0.88, 0.86, 0.60, 0.58], [True, True, True, False, False])
    decision = narrow_choice(AUGMENT, rows, top_k=3)
    assert decision.new.values == (True,)
    assert decision.reason.startswith("{false, true} -> {true}: ")
    assert "true 3 of the top 3" in decision.reason
    assert "false dropped: its best t3 0.600 +- 0.020 vs t2 0.860 +- 0.020" in decision.reason


def test_a_choice_is_not_dropped_on_a_score_within_error_or_without_a_usable_trial():
    rows = augmented([0.9, 0.88, 0.86, 0.85], [True, True, True, False])
    decision = narrow_choice(AUGMENT, rows, top_k=3)
    assert decision.new.values == (False, True) and "false kept:" in decision.reason
    assert decision.reason.startswith("{false, true} kept: ")
    widths = Param("width", "choice", (1, 2, 4))
    rows = ranked([(0.9, 1e-4, 1e-3), (0.5, 1e-4, 1e-3)], width=[1, 2])
    kept = narrow_choice(widths, rows, top_k=1)
    assert kept.new.values == (1, 4) and "4 kept: no usable trial" in kept.reason


def test_a_slow_starter_stopped_early_is_compared_at_the_epoch_it_reached():
    """ASHA stopped t3 after epoch 1; at epoch 1 the top trial scored no better than it did."""
    rows = augmented([0.9, 0.88, 0.60], [True, True, False], epochs_run=[3, 3, 1])
    epochs = pd.DataFrame(
        {
            "trial_id": ["t0", "t0", "t0", "t1", "t1", "t1", "t2"],
            "epoch": [1, 2, 3, 1, 2, 3, 1],
            "val_acc": [0.55, 0.8, 0.9, 0.61, 0.8, 0.88, 0.60],
            "val_acc_se": 0.02,
        }
    )
    fair = narrow_choice(AUGMENT, rows, epochs, top_k=2)
    assert fair.new.values == (False, True)
    assert "its best t2 0.600 +- 0.020 vs t1 0.610 +- 0.020 at epoch 1" in fair.reason
    assert narrow_choice(AUGMENT, rows, top_k=2).new.values == (True,)  # unfair without them
