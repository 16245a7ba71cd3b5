"""ASHA's stopping rule (Ray's ``_Bracket.on_result``, one bracket), with every decision written
down: at each rung a trial goes on only when its score is not below the (1 - 1/rf) quantile of
the scores recorded there before it. Both stage runners apply it through ``Rungs``; the record
says why a trial was stopped (early arrivals face few scores, late ones many), and a stage
restored after an interruption reads its rungs back from it instead of starting them empty
(Ray's own ASHA does, ray-project/ray#30838)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from orchestrator.search.stage_spec import Stage
from trainables.files import write_text

DECISIONS_FILE = "asha.jsonl"  # in the stage's folder in the study, a line per rung decision
COLUMNS = ("asha_rung", "asha_score", "asha_cutoff", "asha_compared")  # the stopped trials'


@dataclass(frozen=True)
class RungDecision:
    """One trial at one rung: its score, the cutoff it faced (nan: the first there goes on),
    how many scores were recorded there before it, and whether it was stopped."""

    trial_id: str
    rung: int
    score: float
    cutoff: float
    compared: int
    stopped: bool
    group: str = ""  # the scheduler's within: the rungs of trials with this value

    def columns(self) -> dict[str, float]:
        return dict(zip(COLUMNS, (self.rung, self.score, self.cutoff, self.compared), strict=True))

    def text(self) -> str:
        verdict = "<" if self.stopped else ">="
        among = f" with {self.group}" if self.group else ""
        return (
            f"stopped at epoch {self.rung}: val_acc {self.score:.4f} {verdict} cutoff "
            f"{self.cutoff:.4f} from {self.compared} earlier trials{among} at that rung"
        )


def decision_text(row: dict) -> str:
    """A stopped trial's decision from its table row; empty for a trial ASHA did not stop."""
    if not _known(row.get("asha_rung")):
        return ""
    rung, score, cutoff, compared = (row[c] for c in COLUMNS)
    return RungDecision("", int(rung), float(score), float(cutoff), int(compared), True).text()


class Rungs:
    """The rungs of one stage: the scores recorded at each, and the decisions made there; one
    set of rungs per group of trials (the scheduler's ``within``), a single one by default."""

    def __init__(self, milestones: Iterable[int], factor: float, log: Path | None = None) -> None:
        self.factor, self.log = factor, log
        self.milestones = sorted((int(m) for m in milestones), reverse=True)
        self.recorded: dict[str, dict[int, dict[str, float]]] = {}
        self.decisions: list[RungDecision] = []
        if log is not None and log.exists():
            for decision in read_decisions(log, mend=True):
                rungs = self._group(decision.group)
                rungs.setdefault(decision.rung, {})[decision.trial_id] = decision.score
                self.decisions.append(decision)

    def _group(self, group: str) -> dict[int, dict[str, float]]:
        return self.recorded.setdefault(group, {m: {} for m in self.milestones})

    @classmethod
    def asha(cls, grace: int, factor: float, epochs: int, log: Path | None = None) -> Rungs:
        """ASHA's rungs below the last epoch: grace, grace x rf, grace x rf^2, ..."""
        milestones, k = [], 0
        while grace * factor**k < epochs:
            milestones.append(int(grace * factor**k))
            k += 1
        return cls(milestones, factor, log)

    def decide(
        self, trial_id: str, epoch: int, score: float, group: str = ""
    ) -> RungDecision | None:
        """The decision at the highest rung ``epoch`` reached, among the trials of ``group``,
        unless the trial was judged there already; None between rungs. A trial stopped before
        an interruption is stopped again at that rung when its restored run gets there (no
        rung is decided twice)."""
        stopped = self.stopping().get(trial_id)
        if stopped is not None and epoch >= stopped.rung:
            return stopped
        for milestone, recorded in self._group(group).items():
            if epoch < milestone or trial_id in recorded:
                continue
            scores = [s for s in recorded.values() if math.isfinite(s)]  # nan: no score
            cutoff = (
                float(np.nanpercentile(scores, (1 - 1 / self.factor) * 100)) if scores else math.nan
            )
            decision = RungDecision(
                trial_id, milestone, float(score), cutoff, len(scores), bool(score < cutoff), group
            )
            recorded[trial_id] = float(score)
            self.decisions.append(decision)
            if self.log is not None:
                with self.log.open("a") as out:
                    out.write(json.dumps(asdict(decision)) + "\n")
            return decision
        return None

    def stopping(self) -> dict[str, RungDecision]:
        """The decision that stopped each stopped trial."""
        return {d.trial_id: d for d in self.decisions if d.stopped}


def rungs_of(stage: Stage, log: Path | None = None) -> Rungs:
    """The stage's ASHA rungs (none for a FIFO stage)."""
    scheduler = stage.scheduler
    if scheduler.type != "asha":
        return Rungs([], 1.0, log)
    return Rungs.asha(scheduler.grace_period, scheduler.reduction_factor, stage.epochs, log)


def read_decisions(path: Path, *, mend: bool = False) -> list[RungDecision]:
    """The decisions in a stage's log; a line cut short by a killed driver is skipped, and
    with ``mend`` dropped from the file, so that the next decision starts a line of its own."""
    text = path.read_text()
    decisions = []
    for line in text.splitlines():
        try:
            decisions.append(RungDecision(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    if mend and text and not text.endswith("\n"):
        write_text(path, "".join(json.dumps(asdict(d)) + "\n" for d in decisions))
    return decisions


def _known(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
