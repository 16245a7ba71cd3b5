"""How trials are judged and ranked: one order for the tables, narrowing, MLflow and the choice.

A score is a validation accuracy with its standard error, and on small data that error is
large (0.11 on 16 images), so the raw maximum is noise. The rules, in order:

1. Health. A trial is flagged, and ranks below every healthy one, when it did not learn (its
   validation loss never fell ``LEARNED_Z`` standard errors below its value before training),
   when the L2 penalty is more than ``PENALTY_SHARE`` of its training loss and larger than
   the loss before training (ln C: a model that fits its data well ends with a small loss
   that is mostly penalty, and is healthy), or when its
   training accuracy is within ``CHANCE_MARGIN`` of the majority class's share.
2. A trial that ran all its epochs ranks above one ASHA stopped (scored earlier).
3. Scores within one standard error of the leader's are a tie: the tied trials are ordered by
   validation loss, then by the lower penalty share, then by fewer epochs. Trial order never
   decides.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import pandas as pd

from orchestrator.names import METRIC
from trainables.status import USABLE, TrialStatus

LEARNED_Z = 2.0
PENALTY_SHARE = 0.5
CHANCE_MARGIN = 0.05

NOT_LEARNING, PENALTY, CHANCE = "not learning", "penalty-dominated", "near chance"
ERROR = f"{METRIC}_se"


def judge(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with ``score``, ``score_se``, ``penalty_share`` and ``flag`` (empty when
    healthy) columns; tables written before these measures existed judge as healthy."""
    frame = trials.copy()
    frame["score"] = frame[METRIC].astype(float)
    frame["score_se"] = _column(frame, ERROR, 0.0)
    train_loss = _column(frame, "train_loss", math.nan)
    frame["penalty_share"] = (_column(frame, "train_penalty", 0.0) / train_loss).fillna(0.0)
    frame["flag"] = [_flag(row) for row in frame.to_dict("records")]
    return frame


def healthy(trials: pd.DataFrame) -> pd.Series:
    return trials["flag"] == ""


def rank(trials: pd.DataFrame) -> pd.DataFrame:
    """The usable trials (not diverged or errored), judged, best first."""
    judged = judge(trials[trials["status"].isin(USABLE)])
    rows = judged.to_dict("records")
    tiers: dict[tuple[bool, bool], list[int]] = {}
    for i, row in enumerate(rows):
        tier = (row["flag"] == "", row["status"] == TrialStatus.COMPLETED)
        tiers.setdefault(tier, []).append(i)
    order: list[int] = []
    for tier in sorted(tiers, reverse=True):
        order += _within_tier(rows, tiers[tier])
    return judged.iloc[order]


def _within_tier(rows: list[dict[str, Any]], members: list[int]) -> list[int]:
    """Leader by score; everything within the leader's error ties with it and is ordered by
    the tie-breakers; repeat with the rest."""
    left = sorted(members, key=lambda i: -finite(rows[i]["score"]))
    order: list[int] = []
    while left:
        lead = rows[left[0]]
        line = finite(lead["score"]) - finite(lead["score_se"], 0.0)
        tied = [i for i in left if finite(rows[i]["score"]) >= line]
        order += sorted(tied, key=lambda i: _tie_break(rows[i]))
        left = [i for i in left if i not in tied]
    return order


def _tie_break(row: dict[str, Any]) -> tuple[float, float, float]:
    return (
        finite(row.get("val_loss"), math.inf),
        finite(row["penalty_share"], 0.0),
        finite(row.get("epochs_run"), 0.0),
    )


def _flag(row: dict[str, Any]) -> str:
    initial, best = row.get("val_loss_initial"), row.get("min_val_loss")
    noise = finite(row.get("val_loss_se"), 0.0)
    if known(initial) and known(best) and best > initial - LEARNED_Z * noise:
        return NOT_LEARNING
    penalty, initial = row.get("train_penalty"), row.get("val_loss_initial")
    above_chance = not (known(penalty) and known(initial)) or penalty > initial
    if finite(row["penalty_share"], 0.0) > PENALTY_SHARE and above_chance:
        return PENALTY
    chance, train_acc = row.get("chance_acc"), row.get("train_acc")
    if known(chance) and known(train_acc) and train_acc < chance + CHANCE_MARGIN:
        return CHANCE
    return ""


def _column(frame: pd.DataFrame, name: str, default: float) -> pd.Series:
    if name not in frame:
        return pd.Series(default, index=frame.index, dtype=float)
    return frame[name].astype(float).fillna(default)


def known(value: Any) -> bool:
    """A real, finite number (not None, NaN or inf): a measure that was taken."""
    return isinstance(value, numbers.Real) and math.isfinite(value)


def finite(value: Any, default: float = -math.inf) -> float:
    """``value`` as a float when ``known``, else ``default``."""
    return float(value) if known(value) else default


def score_text(row: dict[str, Any] | pd.Series) -> str:
    """``0.9375 +- 0.0592``: a score as every view shows it."""
    error = row.get("score_se", row.get(ERROR))
    if not known(error):
        return f"{row[METRIC]:.4f}"
    return f"{row[METRIC]:.4f} +- {error:.4f}"
