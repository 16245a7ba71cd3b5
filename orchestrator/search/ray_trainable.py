"""The adapter that makes the training loop a Ray Tune trainable: it restores the trial's last
checkpoint, reports every epoch (with a checkpoint) to Tune, and nothing else."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from orchestrator.names import METRIC
from trainables.checkpoint import CHECKPOINT_NAME
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.train import DIVERGED, EpochReport, train


def run_trial(
    params: dict[str, Any],
    *,
    base: TrialConfig,
    data: DataSplits,
    after_epoch: Callable[[EpochReport], None] | None = None,
) -> None:
    """One trial: ``base`` with the sampled ``params``. ``after_epoch`` runs once the epoch is
    reported (tests use it to plant faults)."""
    config = base.replace(**params)
    node_id = ray.get_runtime_context().get_node_id()  # two nodes may share one IP
    workdir = Path(tempfile.mkdtemp(prefix="babysitter-trial-"))
    checkpoint_path = workdir / "checkpoint" / CHECKPOINT_NAME
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            checkpoint_path.parent.mkdir(parents=True)
            shutil.copy(Path(folder) / CHECKPOINT_NAME, checkpoint_path)

    def on_epoch(report: EpochReport) -> None:
        metrics: dict[str, Any] = {**report.metrics, "trial_status": report.status}
        metrics["node_id"] = node_id
        if report.status == DIVERGED:
            metrics[METRIC] = 0.0  # the scheduler needs the metric; a diverged trial ranks last
        if report.checkpoint is None:
            tune.report(metrics)
        else:
            tune.report(
                metrics, checkpoint=tune.Checkpoint.from_directory(report.checkpoint.parent)
            )
        if after_epoch is not None:
            after_epoch(report)

    try:
        train(
            config,
            data,
            on_epoch=on_epoch,
            checkpoint_path=checkpoint_path,
            resume=restored is not None,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
