"""Coarse-to-fine narrowing: the next stage's ranges from the previous stage's top trials.

The lecture's rule: narrow around the best trials, but if the best ones sit on a boundary of
the range, the optimum may lie outside it, so widen in that direction instead. With the
guardrails a noisy score needs:

- a boundary counts only when the best top trial sitting there is better than the best top
  trial inside beyond error: a higher score by more than its standard error, or a tied score
  and a validation loss lower by more than the difference's standard error (a tie on both
  decides nothing; on small data the loss, continuous, separates what the accuracy cannot);
- a range widens by at most ``WIDEN`` of its span, and at most ``MAX_WIDEN_DECADES`` decades
  for a log range, per round;
- never past a ``Limit`` the sanity checks measured (the lr where the probe explodes, the l2
  whose penalty at initialisation is far above ln C);
- flagged trials (not learning, penalty-dominated, near chance) count only when no trial is
  healthy.

A choice keeps the values seen among the top trials; a value none of them has is dropped only
when its best trial lost to the last of the top beyond error, both scored at the same epoch
(ASHA stops most trials early, and an early score of a slow starter is not its last word); a
value without a usable trial is kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from orchestrator.names import METRIC
from orchestrator.search.ranking import ERROR, finite, known
from orchestrator.search.space import Param, Range

EDGE = 0.1  # a trial within this share of the span from a boundary sits on it
MARGIN = 0.25
WIDEN = 0.5
MAX_WIDEN_DECADES = 1.0


@dataclass(frozen=True)
class Limit:
    """The highest value a range may be widened to, and why."""

    high: float
    why: str


@dataclass(frozen=True)
class NarrowDecision:
    old: Range
    new: Range
    reason: str
    trial_ids: tuple[str, ...]


@dataclass(frozen=True)
class ChoiceDecision:
    old: Param
    new: Param
    reason: str
    trial_ids: tuple[str, ...]


def top_trials(ranked: Sequence[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` best, healthy ones first: flagged trials count only when none is healthy."""
    if not ranked:
        raise ValueError("no completed trials to narrow from")
    healthy = [t for t in ranked if not t.get("flag")]
    return list(healthy or ranked)[:top_k]


def narrow_choice(
    old: Param,
    ranked: Sequence[dict[str, Any]],
    epochs: pd.DataFrame | None = None,
    *,
    top_k: int = 10,
) -> ChoiceDecision:
    """The values of choice ``old`` the next round keeps, from the ``top_k`` best of ``ranked``
    (as ``narrow``'s); ``epochs`` (a stage's epoch rows) scores two trials at the same epoch."""
    top = top_trials(ranked, top_k)
    kept, dropped, held, notes = [], [], [], []
    for value in old.values:
        count = sum(_same(t.get(old.name), value) for t in top)
        if count:
            kept.append(value)
            held.append(f"{_text(value)} {count} of the top {len(top)}")
            continue
        tried = [t for t in ranked if _same(t.get(old.name), value)]
        if not tried:
            kept.append(value)
            notes.append(f"{_text(value)} kept: no usable trial")
            continue
        lost, why = _lost(tried[0], top[-1], epochs)
        (dropped if lost else kept).append(value)
        notes.append(f"{_text(value)} {'dropped' if lost else 'kept'}: {why}")
    new = Param(old.name, old.kind, tuple(kept))
    change = f"{_values(old)} -> {_values(new)}" if dropped else f"{_values(old)} kept"
    ids = tuple(str(t["trial_id"]) for t in top)
    return ChoiceDecision(old, new, f"{change}: {'; '.join(held + notes)}", ids)


def _lost(
    best: dict[str, Any], bar: dict[str, Any], epochs: pd.DataFrame | None
) -> tuple[bool, str]:
    """Whether ``best`` (a value's best trial) scored below ``bar`` (the last top trial) by
    more than its error, at the epoch both reached; and the evidence in words."""
    at = min(int(best.get("epochs_run") or 0), int(bar.get("epochs_run") or 0))
    mine, theirs = _at_epoch(best, at, epochs), _at_epoch(bar, at, epochs)
    shown = f"its best {best['trial_id']} {_shown(mine)} vs {bar['trial_id']} {_shown(theirs)}"
    shown += f" at epoch {at}" if at else ""
    if _score(theirs) - _score(mine) > _error(mine):
        return True, f"{shown}, below beyond its error"
    return False, f"{shown}, within its error"


def _at_epoch(trial: dict[str, Any], epoch: int, epochs: pd.DataFrame | None) -> dict[str, Any]:
    """``trial``'s score and error as of ``epoch`` (its own last ones without the epoch rows)."""
    if epochs is None or not epoch or METRIC not in epochs:
        return trial
    rows = epochs[(epochs["trial_id"] == trial["trial_id"]) & (epochs["epoch"] == epoch)]
    if rows.empty:
        return trial
    row = rows.iloc[-1]
    se = row[ERROR] if ERROR in rows else 0.0
    return {"score": float(row[METRIC]), "score_se": float(se) if known(se) else 0.0}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _values(param: Param) -> str:
    return "{" + ", ".join(_text(v) for v in param.values) + "}"


def narrow(
    ranges: Sequence[Range],
    ranked: Sequence[dict[str, Any]],
    *,
    top_k: int = 10,
    limits: Mapping[str, Limit] | None = None,
) -> list[NarrowDecision]:
    """One decision per range from the ``top_k`` best of ``ranked`` (usable trials, best first,
    judged by ``ranking.rank``: with ``score``, ``score_se`` and ``flag``)."""
    top = top_trials(ranked, top_k)
    ids = tuple(str(t["trial_id"]) for t in top)
    limits = limits or {}
    return [_narrow_one(r, top, ids, limits.get(r.name)) for r in ranges]


def _narrow_one(
    old: Range, top: list[dict[str, Any]], ids: tuple[str, ...], limit: Limit | None
) -> NarrowDecision:
    lo, hi = old.to_unit(old.low), old.to_unit(old.high)
    points = [old.to_unit(t[old.name]) for t in top]
    pad = MARGIN * max(max(points) - min(points), EDGE * old.span)
    new_lo, new_hi = max(lo, min(points) - pad), min(hi, max(points) + pad)
    step = min(WIDEN * old.span, MAX_WIDEN_DECADES) if old.log else WIDEN * old.span
    reasons = []
    low = _boundary(top, points, lambda p: p - lo <= EDGE * old.span)
    if low is not None:
        text = f"lower boundary {old.low:.3g}: {low.text}"
        if low.counts:
            new_lo = lo - step
            text += f": widened downwards to {old.from_unit(new_lo):.3g}"
        reasons.append(text)
    high = _boundary(top, points, lambda p: hi - p <= EDGE * old.span)
    if high is not None:
        text = f"upper boundary {old.high:.3g}: {high.text}"
        if high.counts:
            cap = math.inf if limit is None else max(hi, old.to_unit(limit.high))
            new_hi = min(hi + step, cap)
            if new_hi > hi:
                text += f": widened upwards to {old.from_unit(new_hi):.3g}"
            if new_hi == cap:
                text += f" ({limit.why})" if new_hi > hi else f": not widened ({limit.why})"
        reasons.append(text)
    if not any(side is not None and side.counts for side in (low, high)):
        reasons.insert(0, f"narrowed around the top {len(points)} trials")
    if new_hi <= new_lo:  # every top trial at one value: keep a sliver around it
        new_lo, new_hi = new_lo - EDGE * old.span / 2, new_hi + EDGE * old.span / 2
    new = Range(old.name, old.from_unit(new_lo), old.from_unit(new_hi), old.log)
    return NarrowDecision(old, new, "; ".join(reasons), ids)


@dataclass(frozen=True)
class _Side:
    counts: bool
    text: str


def _boundary(top: list[dict[str, Any]], points: list[float], sits) -> _Side | None:
    """None when no top trial sits on the boundary; else whether it counts: the best trial
    there (in rank order) beats the best one inside beyond error, or none is inside."""
    edge = [t for t, p in zip(top, points, strict=True) if sits(p)]
    if not edge:
        return None
    inside = [t for t, p in zip(top, points, strict=True) if not sits(p)]
    best = edge[0]
    text = f"top trial {best['trial_id']} ({_shown(best)}) sits there"
    if not inside:
        return _Side(True, f"{text}, no top trial inside")
    rival = inside[0]
    versus = f"{rival['trial_id']} inside ({_shown(rival)})"
    gap = _score(best) - _score(rival)
    if gap > _error(best):
        return _Side(True, f"{text}, better than {versus} beyond its error")
    if gap < -_error(rival):
        return _Side(False, f"{text}, worse than {versus}: not widened")
    loss_gap, noise = _loss_gap(best, rival)
    if loss_gap > noise:
        return _Side(
            True,
            f"{text}, tied with {versus} but its val loss is lower beyond error "
            f"({best['val_loss']:.3f} vs {rival['val_loss']:.3f} +- {noise:.3f})",
        )
    return _Side(False, f"{text}, tied with {versus}: not widened")


def _loss_gap(best: dict[str, Any], rival: dict[str, Any]) -> tuple[float, float]:
    """How much lower ``best``'s validation loss is than ``rival``'s, and the error of that
    difference (inf when either loss or its error is unknown: nothing is decided)."""
    values = [best.get("val_loss"), rival.get("val_loss")]
    errors = [best.get("val_loss_se"), rival.get("val_loss_se")]
    if not all(map(known, values + errors)):
        return 0.0, math.inf
    return values[1] - values[0], math.hypot(*errors)


def _score(trial: dict[str, Any]) -> float:
    return finite(trial.get("score"))


def _error(trial: dict[str, Any]) -> float:
    return finite(trial.get("score_se"), 0.0)


def _shown(trial: dict[str, Any]) -> str:
    return f"{_score(trial):.3f} +- {_error(trial):.3f}"
