"""The lecture's reading of training curves as rules, each with its threshold and the numbers
behind it: "big gap = overfitting, no gap = increase capacity", a flat loss (lr too low), a
rising one (lr too high), the best at a range boundary, update / weight ratios near 1e-3."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.search.ranking import known
from orchestrator.search.space import Param
from trainables.metric_names import UPDATE_RATIO as RATIO_PREFIX
from trainables.metric_names import layer_of
from trainables.sanity_report import RATIO_RANGE
from trainables.status import TrialStatus

if TYPE_CHECKING:
    from orchestrator.report.study_view import StudyView

OVERFIT_GAP = 0.10  # train accuracy above val accuracy by more than this
UNDERFIT_GAP = 0.02  # ... by less than this, while train accuracy stays below UNDERFIT_ACC
UNDERFIT_ACC = 0.90
FLAT_DROP = 0.05  # the loss fell by less than 5 % of its first value
RISE = 1.5  # the last epoch's loss above 1.5 x its lowest

RATIO_EPOCHS = 3  # read at the start of training: a converged model's updates shrink
EDGE = 0.1  # the best within 10 % of the searched span from a bound
DEAD_FRACTION = 0.5  # ReLU units that never fire on the validation batch
TOP_DIAGNOSED = 3  # the last round's top trials diagnosed along with the final run

OVERFITTING, UNDERFITTING = "overfitting", "underfitting"
LR_LOW, LR_HIGH = "lr too low", "lr too high"
BOUNDARY, UPDATE_RATIO, DEAD_RELU = "best at a boundary", "update/weight ratio", "dead ReLUs"


@dataclass(frozen=True)
class Finding:
    """One diagnosis: about what (``subject``), which rule fired, the numbers, what to do."""

    subject: str
    kind: str
    evidence: str
    advice: str

    def text(self) -> str:
        return f"{self.subject}: {self.kind}: {self.evidence}; {self.advice}"


def diagnose_run(
    subject: str, epochs: Sequence[Mapping[str, Any]], status: str = ""
) -> list[Finding]:
    """Findings from one run's per-epoch metrics (a trial's or the final run's)."""
    rows = [dict(r) for r in epochs]
    if not rows:
        return []
    trend = _loss_trend(subject, rows, status)
    fit = [] if any(f.kind == LR_LOW for f in trend) else _fit(subject, rows)  # flat: the lr
    return [*fit, *trend, *_ratios(subject, rows)]


def diagnose_boundary(
    subject: str, best: Mapping[str, Any], space: Mapping[str, Param]
) -> list[Finding]:
    """The best config within EDGE of a bound of the box it was searched in."""
    found = []
    for name, param in space.items():
        if not param.numeric or not known(best.get(name)):
            continue
        box = param.range()
        position = (box.to_unit(float(best[name])) - box.to_unit(box.low)) / box.span
        side = "lower" if position < EDGE else "upper" if position > 1 - EDGE else ""
        if side:
            found.append(
                Finding(
                    subject,
                    BOUNDARY,
                    f"{name} {float(best[name]):.3g} sits at {position:.0%} of [{box.low:.3g}, "
                    f"{box.high:.3g}] (the {side} {EDGE:.0%} of the span)",
                    f"search another round or a range past its {side} bound",
                )
            )
    return found


def diagnose_dead(subject: str, dead: Mapping[str, float]) -> list[Finding]:
    """Layers whose ReLU units are silent on a whole validation batch."""
    return [
        Finding(
            subject,
            DEAD_RELU,
            f"{fraction:.0%} of {layer}'s units never fire on a validation batch "
            f"(above {DEAD_FRACTION:.0%})",
            "lower the lr, check the initialization and biases (he_init), or add batch_norm",
        )
        for layer, fraction in dead.items()
        if fraction > DEAD_FRACTION
    ]


def _fit(subject: str, rows: list[dict[str, Any]]) -> list[Finding]:
    last = rows[-1]
    train, val = last.get("train_acc"), last.get("val_acc")
    if not (known(train) and known(val)):
        return []
    gap = float(train) - float(val)
    numbers = f"train acc {train:.3f}, val acc {val:.3f} (gap {gap:+.3f})"
    if gap > OVERFIT_GAP:
        return [
            Finding(
                subject,
                OVERFITTING,
                f"{numbers} > {OVERFIT_GAP}",
                "raise l2 or dropout, add augmentation or data",
            )
        ]
    if gap < UNDERFIT_GAP and float(train) < UNDERFIT_ACC:
        return [
            Finding(
                subject,
                UNDERFITTING,
                f"{numbers}: no gap and train acc < {UNDERFIT_ACC}",
                "more capacity (width) or epochs, less l2",
            )
        ]
    return []


def _loss_trend(subject: str, rows: list[dict[str, Any]], status: str) -> list[Finding]:
    if status == TrialStatus.DIVERGED:
        return [Finding(subject, LR_HIGH, f"diverged at epoch {len(rows)}", "lower the lr range")]
    losses = [_data_loss(r) for r in rows]
    losses = [v for v in losses if known(v)]
    if len(losses) < 2:
        return []
    first = _initial(rows, losses[0])
    lowest, last = min(losses), losses[-1]
    if last > RISE * lowest and last > lowest + 0.05:
        return [
            Finding(
                subject,
                LR_HIGH,
                f"training loss rose from its lowest {lowest:.3f} to {last:.3f} (> {RISE} x)",
                "lower the lr or add an lr schedule",
            )
        ]
    if first - lowest < FLAT_DROP * first:
        return [
            Finding(
                subject,
                LR_LOW,
                f"training loss {first:.3f} -> {last:.3f} (fell < {FLAT_DROP:.0%})",
                "raise the lr (or lower l2)",
            )
        ]
    return []


def _ratios(subject: str, rows: list[dict[str, Any]]) -> list[Finding]:
    """One finding naming every layer whose update / weight ratio left the band."""
    early = rows[:RATIO_EPOCHS]
    layers = sorted({k for r in early for k in r if k.startswith(RATIO_PREFIX)})
    low, high = RATIO_RANGE
    outside = []
    for column in layers:
        values = sorted(float(r[column]) for r in early if known(r.get(column)))
        if values and not low <= values[len(values) // 2] <= high:
            outside.append((layer_of(column), values[len(values) // 2]))
    if not outside:
        return []
    too_low = all(v < low for _, v in outside)
    layers_text = ", ".join(f"{layer} {v:.2e}" for layer, v in outside)
    return [
        Finding(
            subject,
            UPDATE_RATIO,
            f"{layers_text} outside {low:.0e} .. {high:.0e} (median of the first "
            f"{len(early)} epochs)",
            "the lr is too low for these layers"
            if too_low
            else "the lr is too high for the layers above the band",
        )
    ]


def _data_loss(row: Mapping[str, Any]) -> float:
    """The training loss without the L2 penalty: the part comparable with the val loss."""
    loss = row.get("train_loss")
    if not known(loss):
        return math.nan
    penalty = row.get("train_penalty")
    return float(loss) - (float(penalty) if known(penalty) else 0.0)


def _initial(rows: list[dict[str, Any]], first: float) -> float:
    """The loss before training where it was measured (val), else the first epoch's."""
    initial = rows[0].get("val_loss_initial")
    return max(first, float(initial)) if known(initial) else first


def findings(view: StudyView, dead: dict[str, float]) -> list[Finding]:
    """The diagnosis of the final run and of where the last round's best sits."""
    found: list[Finding] = []
    if view.final is not None:
        found += diagnose_run("final run", view.final.epochs, view.final.status)
        found += diagnose_dead("final run", dead)
    last = view.stages[-1] if view.stages else None
    if last is not None and last.best is not None:
        found += diagnose_boundary(f"{last.name} best", last.best.to_dict(), last.space)
    return found


def trial_findings(view: StudyView) -> list[Finding]:
    """The diagnosis of the last round's top trials."""
    if not view.stages:
        return []
    last = view.stages[-1]
    epochs, found = last.tables.epochs, []
    for row in last.ranked.head(TOP_DIAGNOSED).to_dict("records"):
        history = epochs[epochs["trial_id"] == row["trial_id"]].sort_values("epoch")
        subject = f"{last.name} trial {row['trial_id']}"
        found += diagnose_run(subject, history.to_dict("records"), row["status"])
    return found
