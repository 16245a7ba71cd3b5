"""One search stage on Ray Tune: the trainable, the searcher, the scheduler and the storage,
started fresh or restored from the stage's own folder after an interruption."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator.progress import StageProgress
from orchestrator.ray_trainable import run_trial
from orchestrator.results import stage_tables
from orchestrator.search_space import Param
from orchestrator.study_spec import Resources, Stage
from trainables.config import TrialConfig
from trainables.datasets import DataSplits

METRIC, MODE = "val_acc", "max"


@dataclass(frozen=True)
class StageRun:
    """Everything one stage needs besides the data."""

    name: str
    stage: Stage
    space: dict[str, Param]
    base: TrialConfig
    resources: Resources
    retries: int
    storage: Path
    seed: int = 0

    @property
    def path(self) -> Path:
        return self.storage.resolve() / self.name


def run_stage(
    run: StageRun,
    data: DataSplits,
    *,
    echo: Callable[[str], None] = print,
    trainable: Callable[..., None] = run_trial,
    callbacks: Sequence[tune.Callback] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or finish) the stage and return its trial and epoch tables. ``ray.init`` is the
    caller's: a local runtime or a cluster. ``callbacks`` join the progress lines; a restored
    stage keeps the ones it started with (Tune saved them with the experiment)."""
    # Save Tune's experiment state every step, so a killed driver loses no finished trial.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    threads = max(1, int(run.resources.cpus_per_trial))
    base = run.base.replace(epochs=run.stage.epochs, threads=threads)
    wrapped = tune.with_resources(
        tune.with_parameters(trainable, base=base, data=data),
        {"cpu": run.resources.cpus_per_trial, "gpu": run.resources.gpus_per_trial},
    )
    if tune.Tuner.can_restore(run.path):
        echo(f"{run.name:<6} resuming the interrupted stage from {run.path}")
        tuner = tune.Tuner.restore(str(run.path), trainable=wrapped, resume_errored=False)
    else:
        tuner = tune.Tuner(
            wrapped,
            param_space={name: p.to_tune() for name, p in run.space.items()},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                num_samples=run.stage.trials,
                search_alg=_searcher(run),
                scheduler=_scheduler(run.stage),
                max_concurrent_trials=run.resources.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=run.name,
                storage_path=str(run.storage.resolve()),
                failure_config=tune.FailureConfig(max_failures=run.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[
                    StageProgress(run.name, _trial_count(run), run.stage.epochs, echo),
                    *callbacks,
                ],
                verbose=0,
            ),
        )
    tuner.fit()
    analysis = tune.ExperimentAnalysis(str(run.path))
    return stage_tables(run.name, run.stage.epochs, analysis.trials, base.to_dict())


def _trial_count(run: StageRun) -> int:
    grid = 1
    for param in run.space.values():
        if param.kind == "grid":
            grid *= len(param.values)
    return run.stage.trials * grid


def _searcher(run: StageRun) -> Any:
    if run.stage.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=run.seed)
    return BasicVariantGenerator(random_state=run.seed)


def _scheduler(stage: Stage) -> Any:
    if stage.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=stage.epochs,
        grace_period=stage.scheduler.grace_period,
        reduction_factor=stage.scheduler.reduction_factor,
    )
