"""How far the next round searches: its space narrowed from a round's top trials (the lecture's
coarse -> fine), never widened past what the sanity checks measured, and whether a further
round would learn anything."""

from __future__ import annotations

import math

import pandas as pd

from orchestrator.names import METRIC, Step, round_number, round_stage
from orchestrator.search.narrowing import Limit, NarrowDecision, narrow, narrow_choice
from orchestrator.search.ranking import rank
from orchestrator.search.space import Param
from orchestrator.study.records import NarrowingRecord, RangeDecision, SanityRecord
from orchestrator.study.spec import AUTO, StudySpec
from trainables.datasets import DataSplits
from trainables.errors import BabysitterError
from trainables.sanity import penalty_limit
from trainables.sanity_verdicts import explodes_above

# Narrowing never widens l2 past the value whose penalty at initialisation is this many ln C.
PENALTY_LIMIT = 10.0
SETTLED = 0.5


def narrowing_limits(
    spec: StudySpec, sanity: SanityRecord | None, data: DataSplits
) -> dict[str, Limit]:
    """How far narrowing may widen, from what the sanity checks measured."""
    limits = {}
    explodes = explodes_above(sanity.report.probes) if sanity is not None else None
    if explodes is not None:
        limits["lr"] = Limit(explodes, f"the lr probe explodes at {explodes:.0e}")
    l2 = penalty_limit(spec.base_config(), data, PENALTY_LIMIT)
    why = f"above it the initial L2 penalty exceeds {PENALTY_LIMIT:g} x ln C"
    limits["l2"] = Limit(l2, why)
    return limits


def decide_narrowing(
    spec: StudySpec,
    trials: pd.DataFrame,
    limits: dict[str, Limit] | None = None,
    source: str = Step.COARSE,
    space: dict[str, Param] | None = None,
    epochs: pd.DataFrame | None = None,
) -> NarrowingRecord:
    """The next round's space from the top trials of round ``source`` (which searched
    ``space``, the spec's by default): the lecture's coarse -> fine, never widened past
    ``limits``; a choice keeps the values the top trials hold (``epochs``, the round's epoch
    rows, compare the others at equal epochs). With ``rounds: auto`` a fine round is the last
    when its best trials sit inside the box and the box stopped shrinking (``stop`` says so)."""
    space = space if space is not None else spec.space()
    numeric = [p.range() for p in space.values() if p.numeric]
    ranked = rank(trials).to_dict("records")
    top_k = spec.narrowing.top_k
    try:
        decisions = narrow(numeric, ranked, top_k=top_k, limits=limits)
        choices = [
            narrow_choice(p, ranked, epochs, top_k=top_k)
            for p in space.values()
            if p.kind == "choice"
        ]
    except ValueError:
        raise BabysitterError(nothing_usable(source, trials)) from None
    fine = dict(space)
    for d in decisions:
        fine[d.new.name] = space[d.new.name].with_range(d.new)
    for c in choices:
        fine[c.new.name] = c.new
    stop = ""
    if spec.rounds == AUTO and round_number(source) >= 2:
        stop = rounds_settled(decisions)
    made = [(d.old.name, d.reason, d.trial_ids) for d in decisions]
    made += [(c.old.name, c.reason, c.trial_ids) for c in choices]
    return NarrowingRecord(
        METRIC,
        top_k,
        tuple(
            RangeDecision(name, space[name].to_spec(), fine[name].to_spec(), reason, tuple(ids))
            for name, reason, ids in made
        ),
        {name: p.to_spec() for name, p in fine.items()},
        source=source,
        into=round_stage(round_number(source) + 1),
        stop=stop,
    )


def rounds_settled(decisions: list[NarrowDecision]) -> str:
    """Why no further round is needed (empty when one is): no range widens (the best sit
    inside the box) and the narrowed box keeps more than ``SETTLED`` of the old one's volume
    in the searched units (the top trials spread over most of it: narrowing learns little)."""
    if any(d.new.low < d.old.low or d.new.high > d.old.high for d in decisions):
        return ""
    kept = math.prod(d.new.span / d.old.span for d in decisions)
    if kept <= SETTLED:
        return ""
    return (
        f"the best trials sit inside the box and it stopped shrinking (the next box would "
        f"keep {kept:.0%} of it, more than {SETTLED:.0%})"
    )


def nothing_usable(stage: str, trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts().to_dict()
    return (
        f"the {stage} stage has no usable trial ({', '.join(f'{v} {k}' for k, v in counts.items())}"
        "); lower the lr range or check `babysit results` for the errors"
    )
