"""The study's records, one typed value per file of the study folder (study.json, sanity.json,
narrowing.json, the final run, summary.json): what the pipeline writes and every view reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from orchestrator.names import METRIC, Step
from orchestrator.search.space import Param, parse_space
from trainables.config import flat
from trainables.metrics import ClassificationReport
from trainables.sanity_report import SanityReport


@dataclass(frozen=True)
class StudyState:
    """study.json: the target, the id MLflow runs carry, the tracking URI, the steps already
    recorded there, and whether the sanity checks were skipped."""

    target: Step = Step.FINAL
    study_id: str | None = None
    tracking_uri: str | None = None
    recorded: tuple[str, ...] = ()
    skip_sanity: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StudyState:
        return cls(
            target=Step(raw.get("target", Step.FINAL)),
            study_id=raw.get("study_id"),
            tracking_uri=raw.get("tracking_uri"),
            recorded=tuple(raw.get("recorded", ())),
            skip_sanity=bool(raw.get("skip_sanity", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target": str(self.target)}


@dataclass(frozen=True)
class SanityRecord:
    """sanity.json: the checks' report, the settings they ran with and when they ended."""

    report: SanityReport
    settings: dict[str, Any]
    finished_at: str

    @property
    def passed(self) -> bool:
        return self.report.passed

    @property
    def lr_range(self) -> tuple[float, float] | None:
        return self.report.lr_range

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SanityRecord:
        return cls(SanityReport.from_dict(raw), raw["settings"], raw["finished_at"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "settings": self.settings, "finished_at": self.finished_at}


@dataclass(frozen=True)
class RangeDecision:
    name: str
    old: dict[str, list[Any]]
    new: dict[str, list[Any]]
    reason: str
    trial_ids: tuple[str, ...]


@dataclass(frozen=True)
class NarrowingRecord:
    """narrowing.json (narrowing-fine2.json, ...): how each range of round ``source`` became
    one of round ``into``, and that round's space; ``stop`` says why no further round runs
    (then ``into`` never runs and the final config comes from ``source``)."""

    metric: str
    top_k: int
    decisions: tuple[RangeDecision, ...]
    fine_space: dict[str, Any]
    source: str = Step.COARSE
    into: str = Step.FINE
    stop: str = ""

    def space(self) -> dict[str, Param]:
        return parse_space(self.fine_space)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NarrowingRecord:
        decisions = tuple(
            RangeDecision(d["name"], d["old"], d["new"], d["reason"], tuple(d["trial_ids"]))
            for d in raw["decisions"]
        )
        extra = {k: raw[k] for k in ("source", "into", "stop") if k in raw}
        return cls(raw["metric"], raw["top_k"], decisions, raw["fine_space"], **extra)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "decisions": [
                {**dataclasses.asdict(d), "trial_ids": list(d.trial_ids)} for d in self.decisions
            ]
        }


@dataclass(frozen=True)
class FinalRecord:
    """final/: the chosen config, its per-epoch metrics, its outcome and its test report."""

    config: dict[str, Any]
    status: str
    epochs: list[dict[str, Any]]
    reason: str = ""
    test: ClassificationReport | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The config as tables name its settings (a model argument as ``arch.NAME``)."""
        return flat(self.config)


@dataclass(frozen=True)
class SanitySummary:
    passed: bool
    lr_range: list[float] | None = None


@dataclass(frozen=True)
class BestTrial:
    """A round's best trial as the ranking has it: its score and the values it searched."""

    trial_id: str
    score: float
    score_se: float
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        score = {METRIC: self.score, f"{METRIC}_se": self.score_se}
        return {"trial_id": self.trial_id, **score, **self.params}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BestTrial:
        rest = dict(raw)
        trial_id, score, se = (rest.pop(k) for k in ("trial_id", METRIC, f"{METRIC}_se"))
        return cls(trial_id, score, se, rest)


@dataclass(frozen=True)
class FinalSummary:
    """The chosen config, the round it won and how its final run ended."""

    round: str
    status: str
    config: dict[str, Any]
    test_accuracy: float | None = None
    candidates: dict[str, dict[str, float]] | None = None  # mean and spread over seeds

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Summary:
    """summary.json: the best trial of each round and the final outcome."""

    study: str
    budget: str
    sanity: SanitySummary | None = None
    coarse: BestTrial | None = None
    fine: BestTrial | None = None
    rounds: dict[str, BestTrial] | None = None  # the best of each round after fine (fine2, ...)
    final: FinalSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        sections = {
            "sanity": self.sanity and dataclasses.asdict(self.sanity),
            "coarse": self.coarse and self.coarse.to_dict(),
            "fine": self.fine and self.fine.to_dict(),
            "rounds": self.rounds and {k: v.to_dict() for k, v in self.rounds.items()},
            "final": self.final and self.final.to_dict(),
        }
        kept = {k: v for k, v in sections.items() if v is not None}
        return {"study": self.study, "budget": self.budget, **kept}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Summary:
        def best(section: dict[str, Any] | None) -> BestTrial | None:
            return BestTrial.from_dict(section) if section else None

        rounds = raw.get("rounds")
        return cls(
            raw["study"],
            raw["budget"],
            SanitySummary(**raw["sanity"]) if raw.get("sanity") else None,
            best(raw.get("coarse")),
            best(raw.get("fine")),
            {k: BestTrial.from_dict(v) for k, v in rounds.items()} if rounds else None,
            FinalSummary(**raw["final"]) if raw.get("final") else None,
        )
