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
