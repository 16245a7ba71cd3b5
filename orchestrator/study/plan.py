"""What a study's spec means on its data: whether trials cross-validate, and how many epochs
each stage needs so that every ASHA rung gives a trial enough optimizer steps to learn.

On 144 training images an epoch is 3 steps at batch 64: a 3-epoch coarse stage would judge
configs after 9 steps, before any of them has learned anything (the validation loss still at
ln C), and rank noise. So a stage's epochs (and its grace period) stretch by one factor until
the first rung holds ``min_rung_steps`` steps; the rung structure (grace period x reduction
factor^k) is unchanged. On large data (79 steps per epoch on the CBCL faces) nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.names import SEARCH_STAGES, Step, round_number
from orchestrator.search.space import Param
from orchestrator.study.spec import Stage, StudySpec

# Trials cross-validate (cv: auto) when the validation split holds fewer images than this: on
# 500 images the binomial error of an accuracy near 0.9 is 0.013, on 16 it is 0.075.
CV_BELOW = 500
CV_FOLDS = 5


@dataclass(frozen=True)
class StagePlan:
    stage: Stage  # the spec's stage, epochs and grace period stretched
    stretch: int  # epochs per spec epoch

    def describe(self, steps_per_epoch: int) -> str:
        rung = self.stage.scheduler.grace_period * steps_per_epoch
        if self.stretch == 1:
            return f"first rung {rung} optimizer steps"
        asked = self.stage.epochs // self.stretch
        return (
            f"runs {self.stage.epochs} epochs, not the {asked} asked (x{self.stretch}), so that "
            f"its first ASHA rung holds {rung} optimizer steps ({steps_per_epoch} per epoch)"
        )


@dataclass(frozen=True)
class Plan:
    folds: int  # 0: trials score on the validation split
    train_images: int  # what one trial (one fold) trains on
    steps_per_epoch: int
    stages: dict[str, StagePlan]
    final_epochs: int
    departures: tuple[str, ...] = ()  # where the study runs other than its spec asks, in words

    @property
    def custom(self) -> bool:
        return bool(self.departures)

    def stage(self, name: str) -> Stage:
        """A search stage as planned: round 1 is coarse, every later round is a fine one."""
        return self.stages[Step.COARSE if round_number(name) == 1 else Step.FINE].stage

    def scoring(self, val_images: int) -> str:
        if self.folds:
            return (
                f"{self.folds}-fold cross-validation on train + val "
                f"({self.train_images} training images per fold)"
            )
        return f"the validation split ({val_images} images)"


def plan_study(spec: StudySpec, train_images: int, val_images: int) -> Plan:
    """The plan for ``spec`` on a training split of ``train_images`` and a validation split of
    ``val_images`` images."""
    folds = cv_folds(spec, val_images)
    pool = train_images + val_images
    per_trial = pool - math.ceil(pool / folds) if folds else train_images
    batch = _largest_batch(spec)
    steps = max(1, math.ceil(per_trial / batch))
    stages = {
        name: _stretch(spec.stage(name), steps, spec.min_rung_steps) for name in SEARCH_STAGES
    }
    final_stretch = stages[Step.FINE].stretch
    departures = [f"{name} {p.describe(steps)}" for name, p in stages.items() if p.stretch > 1]
    top_k, trials = spec.narrowing.top_k, spec.coarse.trials
    if top_k >= trials:
        departures.append(
            f"narrowing.top_k {top_k} is not below the {trials} coarse trials, so every coarse "
            f"trial shapes the fine ranges and they narrow little; set top_k below {trials}"
        )
    return Plan(
        folds, per_trial, steps, stages, spec.final_epochs * final_stretch, tuple(departures)
    )


def cv_folds(spec: StudySpec, val_images: int) -> int:
    if spec.cv == "off":
        return 0
    if spec.cv == "auto":
        return CV_FOLDS if val_images < CV_BELOW else 0
    return int(spec.cv)


def _stretch(stage: Stage, steps_per_epoch: int, min_steps: int) -> StagePlan:
    rung_steps = stage.scheduler.grace_period * steps_per_epoch
    factor = max(1, math.ceil(min_steps / rung_steps))
    if factor == 1:
        return StagePlan(stage, 1)
    scheduler = stage.scheduler.model_copy(
        update={"grace_period": stage.scheduler.grace_period * factor}
    )
    return StagePlan(
        stage.model_copy(update={"epochs": stage.epochs * factor, "scheduler": scheduler}), factor
    )


def _largest_batch(spec: StudySpec) -> int:
    """The batch size with the fewest steps per epoch, when the search varies it."""
    searched = spec.search_space.get("batch_size")
    if searched is None:
        return spec.base_config().batch_size
    return int(max(Param.parse("batch_size", searched).values))  # a range's high or a choice
