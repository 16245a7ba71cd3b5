"""The names an epoch's metrics go by, from the training loop to the stage tables, the report
and MLflow: written once here, so that no layer keeps a list of its own."""

from __future__ import annotations

EPOCH = "epoch"
TRIAL_STATUS = "trial_status"  # the trainable's word on the epoch: running, completed, diverged
EPOCH_SECONDS = "epoch_seconds"
MEASURED = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s")
# what judges a trial (the orchestrator's ranking): the score's error, learning, penalty, chance
JUDGED = ("val_acc_se", "val_loss_se", "val_loss_initial", "train_penalty", "chance_acc", "folds")
PER_TRIAL = ("val_loss_initial", "chance_acc", "folds")  # the same at every epoch of a trial
UPDATE_RATIO = "update_ratio/"  # update_ratio/<layer>: a layer's update / weight ratio
FOLD = "fold"  # fold<i>/val_acc, fold<i>/val_loss: a cross-validated trial's folds


def per_layer_or_fold(name: str) -> bool:
    return name.startswith((UPDATE_RATIO, FOLD))


def layer_of(name: str) -> str:
    """``conv1`` for ``update_ratio/conv1``."""
    return name.removeprefix(UPDATE_RATIO)
