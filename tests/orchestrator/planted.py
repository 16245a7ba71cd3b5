"""Planted faults for the fault-tolerance tests: trainables that wrap the real one. Pickled
by value (see the test), so Ray's worker processes need not import the tests package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ALWAYS_FAILS_LR = 0.02
FAILS_ONCE_LR = 0.01


def flaky_trainable(markers: Path) -> Callable[..., None]:
    """The real trainable, except that the trial with lr 0.01 raises once after epoch 2 and the
    one with lr 0.02 raises after every epoch. Each start is logged: 1 when it began from a
    checkpoint."""

    def flaky(params: dict[str, Any], *, base, data) -> None:
        from ray import tune

        from orchestrator.search.ray_trainable import run_trial

        lr = params["lr"]
        key = markers / f"{base.epochs}-{lr:g}"
        restored = tune.get_checkpoint() is not None
        with open(f"{key}.starts", "a") as log:
            log.write(f"{int(restored)}\n")

        def fault(report) -> None:
            if lr == ALWAYS_FAILS_LR:
                raise RuntimeError("planted: this trial always fails")
            failed = Path(f"{key}.failed")
            if lr == FAILS_ONCE_LR and report.epoch == 2 and not failed.exists():
                failed.touch()
                raise RuntimeError("planted: fails once after epoch 2")

        run_trial(params, base=base, data=data, after_epoch=fault)

    return flaky


def scored_by_lr(params: dict[str, Any], *, base, data) -> None:
    """No training: each epoch reports val_acc = lr + epoch / 100 at once, so a stage's ASHA
    decisions follow from the lrs and the order the trials reach each rung."""
    from ray import tune

    for epoch in range(1, base.epochs + 1):
        tune.report(
            {"epoch": epoch, "val_acc": params["lr"] + epoch / 100, "trial_status": "running"}
        )


def quick_trials(barrier: Path, together: int) -> Callable[..., None]:
    """No training: a trial waits until ``together`` trials have started (so that many report
    at once, or it fails after two minutes), then reports its epochs, a quarter of a second
    each, with the metrics a real trial reports."""

    def quick(params: dict[str, Any], *, base, data) -> None:
        import time

        from ray import tune

        (barrier / tune.get_context().get_trial_id()).touch()
        deadline = time.monotonic() + 120
        while len(list(barrier.iterdir())) < together:
            if time.monotonic() > deadline:
                raise RuntimeError(f"planted: fewer than {together} trials ran at once")
            time.sleep(0.1)
        lr = params["lr"]
        for epoch in range(1, base.epochs + 1):
            time.sleep(0.25)
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
                    "epoch_seconds": 0.25,
                    "trial_status": "running",
                }
            )

    return quick
