"""Planted faults for the fault-tolerance tests: trainables that wrap the real one. Pickled
by value (see the test), so Ray's worker processes need not import the tests package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ALWAYS_FAILS_LR = 0.02
FAILS_ONCE_LR = 0.01
TORN_LR = 0.005


def flaky_trainable(markers: Path) -> Callable[..., None]:
    """The real trainable, except that the trial with lr 0.01 raises once after epoch 2, the
    one with lr 0.02 raises after every epoch, and the one with lr 0.005 cuts its stored
    checkpoint short after epoch 2, then raises once. Each start is logged: 1 when it began
    from a checkpoint."""

    def flaky(params: dict[str, Any], *, base, data, checkpoints) -> None:
        from ray import tune

        from orchestrator.search.ray_trainable import run_trial, trial_folder

        lr = params["lr"]
        key = markers / f"{base.epochs}-{lr:g}"
        restored = tune.get_checkpoint() is not None
        with open(f"{key}.starts", "a") as log:
            log.write(f"{int(restored)}\n")

        def fault(report) -> None:
            if lr == ALWAYS_FAILS_LR:
                raise RuntimeError("planted: this trial always fails")
            failed = Path(f"{key}.failed")
            if lr in (FAILS_ONCE_LR, TORN_LR) and report.epoch == 2 and not failed.exists():
                failed.touch()
                if lr == TORN_LR:
                    torn = trial_folder(checkpoints) / "epoch-2.pt"
                    torn.write_bytes(torn.read_bytes()[:100])  # `truncate -s 100`
                raise RuntimeError("planted: fails once after epoch 2")

        run_trial(params, base=base, data=data, checkpoints=checkpoints, after_epoch=fault)

    return flaky


def scored_by_lr(params: dict[str, Any], *, base, data, **_) -> None:
    """No training: each epoch reports val_acc = lr + epoch / 100 at once, so a stage's ASHA
    decisions follow from the lrs and the order the trials reach each rung."""
    from ray import tune

    for epoch in range(1, base.epochs + 1):
        tune.report(
            {"epoch": epoch, "val_acc": params["lr"] + epoch / 100, "trial_status": "running"}
        )


def scored_group_by_lr(configs, data, *, on_epoch, **_) -> None:
    """``scored_by_lr`` for a fused group: each member reports val_acc = lr + epoch / 100 in
    stack order, and one that its stage stops leaves the group."""
    from trainables.epoch import EpochReport

    members = list(range(len(configs)))
    for epoch in range(1, configs[0].epochs + 1):
        status = "completed" if epoch == configs[0].epochs else "running"
        members = [
            k
            for k in members
            if on_epoch(
                k,
                EpochReport(
                    epoch, {"epoch": epoch, "val_acc": configs[k].lr + epoch / 100}, status
                ),
            )
        ]


def quick_trials(
    barrier: Path | None = None, together: int = 0, seconds: float = 0.25
) -> Callable[..., None]:
    """No training: a trial waits until ``together`` trials have started (so that many report
    at once, or it fails after two minutes), then reports its epochs, ``seconds`` each, with
    the metrics and a checkpoint each, as a real trial does."""

    def quick(params: dict[str, Any], *, base, data, **_) -> None:
        import time

        from ray import tune

        if barrier is not None:
            (barrier / tune.get_context().get_trial_id()).touch()
            deadline = time.monotonic() + 120
            while len(list(barrier.iterdir())) < together:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"planted: fewer than {together} trials ran at once")
                time.sleep(0.1)
        lr = params["lr"]
        restored = tune.get_checkpoint()  # a retried trial goes on where it stopped
        first = 1
        if restored is not None:
            with restored.as_directory() as folder:
                first = int((Path(folder) / "epoch").read_text()) + 1
        for epoch in range(first, base.epochs + 1):
            time.sleep(seconds)
            score = min(0.99, 0.5 + lr + epoch / 100)
            tune.report(
                {
                    "epoch": epoch,
                    "lr": lr,
                    "train_loss": 1 / epoch,
                    "train_acc": score,
                    "val_loss": 1.1 / epoch,
                    "val_acc": score,
                    "images_per_s": 1000.0 + epoch,
                    "epoch_seconds": seconds,
                    "trial_status": "running",
                },
                checkpoint=_epoch_checkpoint(epoch),
            )

    return quick


def _epoch_checkpoint(epoch: int):
    import tempfile

    from ray import tune

    folder = Path(tempfile.mkdtemp(prefix="planted-"))
    (folder / "epoch").write_text(str(epoch))
    return tune.Checkpoint.from_directory(str(folder))


def interrupts_driver(driver: int, marker: Path, at_lr: float) -> Callable[..., None]:
    """``scored_by_lr``, except that the trial with lr ``at_lr`` sends the driver SIGINT once,
    after its first epoch (as Ctrl-C does): Tune saves its state and stops the stage there."""

    def trial(params: dict[str, Any], *, base, data, **_) -> None:
        import os
        import signal
        import time

        from ray import tune

        for epoch in range(1, base.epochs + 1):
            tune.report({"epoch": epoch, "val_acc": params["lr"] + epoch / 100,
                         "trial_status": "running"})  # fmt: skip
            if params["lr"] == at_lr and epoch == 1 and not marker.exists():
                marker.touch()
                os.kill(driver, signal.SIGINT)
                time.sleep(30)  # stopped here by the driver

    return trial


def scored_by_l2(config, data, *, on_epoch, checkpoint_path, resume) -> None:
    """No training, for the in-process runner: val_acc rises with l2, so narrowing presses
    toward the top of the range (where an uncapped search would go)."""
    from trainables.epoch import EpochReport
    from trainables.status import TrialStatus

    for epoch in range(1, config.epochs + 1):
        metrics = {"epoch": epoch, "val_acc": 0.5 + config.l2 / 1000, "val_loss": 1.0}
        on_epoch(EpochReport(epoch, metrics, TrialStatus.RUNNING))


def misbehaving(params: dict[str, Any], *, base, data, **_) -> None:
    """``scored_by_lr``'s scores, except: lr 0.5 asks for 1 TiB (the allocator refuses, as
    when a trial runs out of memory), 0.4 reports val_acc NaN, 0.3 +inf, 0.2 no val_acc."""
    import math

    import torch
    from ray import tune

    lr = params["lr"]
    for epoch in range(1, base.epochs + 1):
        if lr == 0.5:
            torch.empty(2**40, dtype=torch.uint8)
        score = {0.4: math.nan, 0.3: math.inf}.get(lr, lr + epoch / 100)
        metrics = {"epoch": epoch, "lr": lr, "val_acc": score, "trial_status": "running"}
        if lr == 0.2:
            del metrics["val_acc"]
        tune.report(metrics)


def lr_grid_run(folder: Path, retries: int = 0, fuse: str | int = "auto"):
    """A coarse stage of six trials, lr 0.6 down to 0.1 in that order, three epochs each,
    ASHA with rungs at epochs 1 and 2: for the planted trainables above."""
    from orchestrator.search.stage import StageRun
    from orchestrator.study.spec import parse_spec
    from tests.conftest import FACES

    spec = parse_spec(
        f"""
name: grid
trial: {{dataset: faces, data: {FACES}, train_subset: 300}}
search_space: {{lr: {{grid: [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]}}}}
coarse: {{trials: 1, epochs: 3, search: grid, scheduler: {{grace_period: 1, reduction_factor: 2}}}}
fine: {{trials: 1, epochs: 1}}
""",
        "grid",
    )
    space, base = spec.space(), spec.base_config()
    resources = spec.resources.model_copy(update={"fuse": fuse})
    return StageRun("coarse", spec.coarse, space, base, resources, retries, folder)
