"""Coarse-to-fine narrowing: the next stage's ranges from the previous stage's top trials.

The lecture's rule: narrow around the best trials, but if the best ones sit on a boundary of
the range, the optimum may lie outside it, so widen in that direction instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.search.results import rank_key
from orchestrator.search.space import Range
from trainables.status import USABLE

EDGE = 0.1
MARGIN = 0.25
WIDEN = 0.5
LEADERS = 3


@dataclass(frozen=True)
class NarrowDecision:
    old: Range
    new: Range
    reason: str
    trial_ids: tuple[str, ...]


def narrow(
    ranges: Sequence[Range],
    trials: Sequence[dict[str, Any]],
    *,
    metric: str = "val_acc",
    top_k: int = 10,
) -> list[NarrowDecision]:
    """One decision per range from the ``top_k`` trials by ``metric`` (higher is better); a
    range widens towards a boundary that one of the best ``LEADERS`` trials sits on.

    ``trials`` are rows with ``trial_id``, ``status``, the metric and each range's value,
    ranked as everywhere else (``results.rank_key``); diverged and errored trials never count.
    """
    usable = [t for t in trials if t.get("status") in USABLE]
    if not usable:
        raise ValueError("no completed trials to narrow from")
    top = sorted(usable, key=lambda t: rank_key(t["status"], t[metric]), reverse=True)[:top_k]
    ids = tuple(str(t["trial_id"]) for t in top)
    return [_narrow_one(r, [t[r.name] for t in top], ids) for r in ranges]


def _narrow_one(old: Range, values: list[float], ids: tuple[str, ...]) -> NarrowDecision:
    lo, hi = old.to_unit(old.low), old.to_unit(old.high)
    points = [old.to_unit(v) for v in values]
    leaders = points[:LEADERS]
    pad = MARGIN * max(max(points) - min(points), EDGE * old.span)
    new_lo, new_hi = max(lo, min(points) - pad), min(hi, max(points) + pad)
    reasons = []
    if min(leaders) - lo <= EDGE * old.span:
        new_lo = lo - WIDEN * old.span
        reasons.append(f"lower boundary {old.low:.3g}: widened downwards")
    if hi - max(leaders) <= EDGE * old.span:
        new_hi = hi + WIDEN * old.span
        reasons.append(f"upper boundary {old.high:.3g}: widened upwards")
    if reasons:
        reason = f"a top-{len(leaders)} trial sits on the " + " and the ".join(reasons)
    else:
        reason = f"narrowed around the top {len(points)} trials"
    new = Range(old.name, old.from_unit(new_lo), old.from_unit(new_hi), old.log)
    return NarrowDecision(old, new, reason, ids)
