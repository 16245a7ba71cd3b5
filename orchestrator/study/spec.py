"""The study spec: one YAML file (or a packaged preset) validated into one typed object that
says what to search, how, with which budget and resources."""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from orchestrator.names import SEARCH_STAGES, BudgetName, round_number
from orchestrator.search.space import Param, parse_space
from orchestrator.search.stage_spec import Resources, Scheduler, Stage, Strict
from trainables.config import ARCH, TrialConfig, default, field_names
from trainables.errors import ConfigError
from trainables.sanity_report import SanitySettings

AUTO = "auto"  # search_space.lr: auto takes the coarse range from the sanity checks' lr probe
# Settings a search may not vary: they pick the data, the length or the place of a trial.
NOT_SEARCHABLE = frozenset(
    {"dataset", "data", "val_fraction", "test_fraction", "split_seed", "train_subset"}
    | {"epochs", "device", "threads", "cv_folds", "arch"}
)


@dataclass(frozen=True)
class Budget:
    """Caps on (trials, epochs) per stage, final epochs, training images and optimizer steps
    per rung (smoke checks the plumbing, not the judgement: its rungs are not stretched)."""

    coarse: tuple[int, int]
    fine: tuple[int, int]
    final_epochs: int
    train_subset: int
    min_rung_steps: int | None = None


BUDGETS: dict[BudgetName, Budget | None] = {
    BudgetName.SMOKE: Budget(
        coarse=(4, 1), fine=(2, 2), final_epochs=2, train_subset=600, min_rung_steps=1
    ),
    BudgetName.DEMO: Budget(coarse=(24, 3), fine=(8, 8), final_epochs=10, train_subset=10_000),
    BudgetName.FULL: None,
}


class Narrowing(Strict):
    top_k: int = Field(10, ge=1)


class Final(Strict):
    epochs: int | None = Field(None, ge=1)
    # the top candidates of the last round retrained with this many seeds, chosen by the mean
    candidates: int = Field(1, ge=1)
    seeds: int = Field(1, ge=1)

    @property
    def retrains(self) -> bool:
        return self.candidates * self.seeds > 1


class Sanity(Strict):
    """How hard the sanity checks look: fewer images and steps check sooner and less surely
    (the defaults take seconds on faces; tests use a quicker look)."""

    sample: int = Field(SanitySettings.sample, ge=64)
    overfit_steps: int = Field(SanitySettings.overfit_steps, ge=10)
    probe_steps: int = Field(SanitySettings.probe_steps, ge=10)
    val_images: int = Field(SanitySettings.val_images, ge=100)


class Outputs(Strict):
    """What a study makes for people besides its records; none of it changes the results."""

    report: bool = True  # report.html (the command center) after each step
    mlflow_model: bool = True  # the final model logged to MLflow, ready to serve


# The recipe's defaults (the seed report's): a spec needs only what differs from them.
DEFAULT_SPACE = {"lr": AUTO, "l2": {"loguniform": [1.0e-5, 10.0]}}
DEFAULT_COARSE = Stage(trials=100, epochs=5, scheduler=Scheduler(grace_period=1))
DEFAULT_FINE = Stage(trials=30, epochs=15, scheduler=Scheduler(grace_period=3))


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # default: default_name()
    trial: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPACE))
    coarse: Stage = DEFAULT_COARSE
    fine: Stage = DEFAULT_FINE
    narrowing: Narrowing = Narrowing()
    final: Final = Final()
    resources: Resources = Resources()
    retries: int = Field(2, ge=0)
    budget: BudgetName = BudgetName.FULL
    # auto: 5-fold cross-validation when the validation split is small (plan.CV_BELOW)
    cv: Literal["auto", "off"] | int = "auto"
    min_rung_steps: int = Field(40, ge=1)
    # search rounds: coarse, then fine rounds (fine, fine2, ...), each narrowed from the last;
    # auto goes on until the best sit inside the box and it stopped shrinking (max_rounds cap)
    rounds: Literal["auto"] | int = 2
    max_rounds: int = Field(4, ge=2)
    sanity: Sanity = Sanity()
    outputs: Outputs = Outputs()

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data:
            return {**data, "name": default_name(data.get("trial"))}
        return data

    @field_validator("trial")
    @classmethod
    def _trial_is_a_config(cls, trial: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(trial) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}; known: {', '.join(field_names())}")
        if "cv_folds" in trial:
            raise ValueError("cv_folds is set by the study; write cv: K at the spec's top level")
        config = TrialConfig(**trial)
        if config.dataset == "imagefolder" and not config.data:
            raise ValueError(
                "dataset imagefolder needs its folder of class folders: pass --data DIR "
                "or write trial.data"
            )
        return trial

    @field_validator("search_space")
    @classmethod
    def _space_is_searchable(cls, space: dict[str, Any]) -> dict[str, Any]:
        if not space:
            raise ValueError("is empty; name at least one hyperparameter, e.g. lr")
        for name, value in space.items():
            if name.startswith(ARCH) and len(name) > len(ARCH):
                continue
            if name not in field_names() or name in NOT_SEARCHABLE:
                searchable = [n for n in field_names() if n not in NOT_SEARCHABLE]
                raise ValueError(
                    f"{name!r} cannot be searched; searchable: {', '.join(searchable)}"
                )
            if value == AUTO and name != "lr":
                raise ValueError(
                    f"{name}: auto is for lr only (the sanity checks probe learning rates); "
                    f"give {name} a range such as {{loguniform: [1e-5, 1e-1]}}"
                )
        parse_space(_given(space))
        return space

    @field_validator("rounds")
    @classmethod
    def _rounds(cls, rounds: str | int) -> str | int:
        if isinstance(rounds, int) and rounds < 2:
            raise ValueError(
                "needs at least 2 (coarse and fine); write rounds: auto to let the results decide"
            )
        return rounds

    @field_validator("cv", mode="before")
    @classmethod
    def _off(cls, cv: Any) -> Any:
        return "off" if cv is False else cv  # YAML reads a bare off as false

    @field_validator("cv")
    @classmethod
    def _folds(cls, cv: str | int) -> str | int:
        if isinstance(cv, int) and cv < 2:
            raise ValueError("needs at least 2 folds; write cv: off to score on the val split")
        return cv

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        base = self.base_config()
        searched = parse_space(_given(self.search_space))
        for param in searched.values():
            for value in param.values:
                try:
                    base.replace(**{param.name: value})
                except ConfigError as exc:
                    raise ValueError(f"search_space.{param.name} allows {value!r}: {exc}") from None
        has_grid = any(p.kind == "grid" for p in searched.values())
        for name in SEARCH_STAGES:
            stage = self.stage(name)
            problem = stage.problem(name, [p.name for p in searched.values() if not p.numeric])
            if problem:
                raise ValueError(problem)
            if stage.search == "optuna" and has_grid:
                raise ValueError(f"{name}.search=optuna cannot run grid parameters; use choice")
            if stage.search == "grid" and not has_grid:
                raise ValueError(f"{name}.search=grid needs at least one {{grid: [...]}} parameter")
        return self

    def base_config(self) -> TrialConfig:
        return TrialConfig(**self.trial)

    def model_configs(self) -> list[TrialConfig]:
        """The trial settings with every network the search may build: the base one, and each
        searched value of ``model`` and of its ``arch`` arguments (a range's two ends)."""
        base = self.base_config()
        configs = [base]
        for param in parse_space(_given(self.search_space)).values():
            if param.name == "model" or param.name.startswith(ARCH):
                configs += [base.replace(**{param.name: value}) for value in param.values]
        return configs

    def space(self) -> dict[str, Param]:
        if self.lr_auto:
            raise ConfigError(
                "search_space.lr is auto and has no range yet: the sanity checks' lr probe "
                "gives it one; run them (drop --skip-sanity) or give lr a range"
            )
        return parse_space(self.search_space)

    @property
    def lr_auto(self) -> bool:
        return self.search_space.get("lr") == AUTO

    def with_lr_range(self, low: float, high: float) -> StudySpec:
        """This spec with ``lr: auto`` replaced by the range the lr probe proposed."""
        space = {**self.search_space, "lr": {"loguniform": [low, high]}}
        return self.model_copy(update={"search_space": space})

    def stage(self, name: str) -> Stage:
        """The settings of a search stage: ``coarse``'s for round 1, ``fine``'s after."""
        return self.coarse if round_number(name) == 1 else self.fine

    @property
    def round_cap(self) -> int:
        """The most search rounds this study runs."""
        return self.max_rounds if self.rounds == AUTO else int(self.rounds)

    @property
    def final_epochs(self) -> int:
        return self.final.epochs or self.fine.epochs

    def with_budget(self, budget: str, train_images: int | None = None) -> StudySpec:
        """The spec scaled to ``budget``: caps only, a budget never enlarges a study. The cap on
        training images applies when the training split (``train_images``) is larger; top-k
        shrinks with the coarse trials (at least 3)."""
        caps = BUDGETS[budget]
        if caps is None:
            return self.model_copy(update={"budget": BudgetName(budget)})
        trial = dict(self.trial)
        if train_images is None or caps.train_subset < train_images:
            subset = trial.get("train_subset")
            trial["train_subset"] = min(subset or caps.train_subset, caps.train_subset)
        coarse = self.coarse.capped(*caps.coarse)
        top_k = math.ceil(self.narrowing.top_k * coarse.trials / self.coarse.trials)
        return self.model_copy(
            update={
                "budget": BudgetName(budget),
                "trial": trial,
                "narrowing": Narrowing(top_k=max(min(3, self.narrowing.top_k), top_k)),
                "coarse": coarse,
                "fine": self.fine.capped(*caps.fine),
                "final": self.final.model_copy(
                    update={"epochs": min(self.final_epochs, caps.final_epochs)}
                ),
                "min_rung_steps": min(self.min_rung_steps, caps.min_rung_steps or math.inf),
            }
        )

    def with_resources(self, **resources: float | str | None) -> StudySpec:
        """A copy with the per-trial resources given (None keeps the spec's)."""
        return self.with_changes(resources={k: v for k, v in resources.items() if v is not None})

    def with_changes(self, **changes: Any) -> StudySpec:
        """A validated copy: ``trial`` and ``resources`` entries are merged, the rest replaced."""
        data = self.model_dump()
        for key, value in changes.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) else value
        return validate(data, "the command line")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def defining(self) -> dict[str, Any]:
        """The fields that define the study's results: not its resources (they change its
        speed) nor its outputs; sanity settings only when they are not the defaults (a spec
        written before they existed defines the same study)."""
        dumped = self.model_dump(mode="json")
        if self.sanity == Sanity():
            del dumped["sanity"]
        return {k: v for k, v in dumped.items() if k not in ("resources", "outputs")}

    def digest(self) -> str:
        """A short hash of what defines the study's results, tagged on every MLflow run to
        tell studies of one name apart."""
        return hashlib.sha256(yaml.safe_dump(self.defining()).encode()).hexdigest()[:12]


def default_name(trial: Any) -> str:
    """A study's name when its spec gives none: its data folder's (``digits`` for
    ``/data/digits.tar.gz``), else its data set's."""
    trial = trial if isinstance(trial, dict) else {}
    data = trial.get("data")
    stem = Path(str(data).rstrip("/")).name.split(".")[0] if data else ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip("._-")
    return stem or str(trial.get("dataset", default("dataset")))


def _given(space: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in space.items() if value != AUTO}


PRESETS = importlib.resources.files("orchestrator.study") / "presets"


def presets() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in PRESETS.iterdir() if p.name.endswith(".yaml")
    )


def load_spec(study: str, **trial: Any) -> StudySpec:
    """A preset name (``faces``, ``cifar10``, ``imagefolder``) or the path of a YAML spec,
    with ``trial`` settings (the command line's ``--data``) merged in before it is checked."""
    if study in presets():
        text = (PRESETS / f"{study}.yaml").read_text()
        return parse_spec(text, f"preset {study!r}", **trial)
    path = Path(study)
    if not path.is_file():
        raise ConfigError(
            f"STUDY {study!r} is neither a preset ({', '.join(presets())}) nor a spec file; "
            "pass a preset name or the path of a YAML study spec"
        )
    return parse_spec(path.read_text(), str(path), **trial)


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-6`` as a float (YAML 1.2) rather than a string."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_spec(text: str, origin: str, **trial: Any) -> StudySpec:
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{origin}{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a study spec is a YAML mapping (name:, trial:, ...)")
    if trial:
        given = data.get("trial")
        data = {**data, "trial": {**(given if isinstance(given, dict) else {}), **trial}}
    return validate(data, origin)


# What a spec saved by an older version meant by the keys it did not have yet.
SAVED_DEFAULTS = {"cv": "off", "min_rung_steps": 1, "rounds": 2}


def parse_saved_spec(text: str, origin: str) -> StudySpec:
    """A study folder's spec.yaml: keys added since it was written keep the behaviour of the
    version that wrote it, so an old study resumes as it started."""
    spec = parse_spec(text, origin)
    data = yaml.load(text, Loader=_SpecLoader)
    missing = {k: v for k, v in SAVED_DEFAULTS.items() if k not in data}
    return spec.model_copy(update=missing) if missing else spec


def validate(data: dict[str, Any], origin: str) -> StudySpec:
    """The typed spec, or one line naming every mistake in it at once."""
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        found = list(dict.fromkeys(_said(error) for error in exc.errors()))
        raise ConfigError(f"{origin}: {'; '.join(found)}") from None


def _said(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}; remove it or fix the spelling"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    message = error["msg"].removeprefix("Value error, ")
    if not where or message.startswith(where):
        return message
    value = error.get("input")
    shown = f"={value!r}" if not isinstance(value, dict | list) else ""
    return f"{where}{shown}: {message}"
