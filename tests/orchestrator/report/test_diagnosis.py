"""The diagnosis fires on planted runs trained for real, and stays quiet on a healthy one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from orchestrator.report.diagnosis import (
    BOUNDARY,
    DEAD_RELU,
    LR_HIGH,
    LR_LOW,
    OVERFITTING,
    UNDERFITTING,
    UPDATE_RATIO,
    diagnose_boundary,
    diagnose_dead,
    diagnose_run,
)
from orchestrator.report.model_views import _activations, _dead_fraction
from orchestrator.search.space import parse_space
from trainables.datasets import load_data
from trainables.evaluation import device_split
from trainables.train import train
from trainables.trial_state import build_model


def kinds(findings) -> list[str]:
    return [f.kind for f in findings]


@pytest.fixture(scope="module")
def healthy_history(faces_config, cache_dir):
    config = faces_config.replace(train_subset=1000, lr=0.01, l2=1e-4, epochs=5)
    return train(config, load_data(config, cache_dir)).history


@pytest.mark.slow
def test_a_healthy_run_gets_no_warning(healthy_history):
    assert healthy_history[-1]["val_acc"] > 0.85
    assert diagnose_run("final run", healthy_history) == []


@pytest.mark.slow
def test_overfitting_fires_on_a_tiny_unregularised_training_set(faces_config, cache_dir):
    config = faces_config.replace(train_subset=20, l2=0.0, lr=0.01, epochs=30)
    history = train(config, load_data(config, cache_dir)).history
    found = diagnose_run("final run", history)
    assert OVERFITTING in kinds(found)
    text = next(f for f in found if f.kind == OVERFITTING).text()
    assert f"train acc {history[-1]['train_acc']:.3f}" in text  # the numbers behind it


def test_a_too_low_lr_reads_as_a_flat_loss(faces_config, cache_dir):
    config = faces_config.replace(train_subset=300, lr=1e-7, epochs=2)
    found = diagnose_run("trial", train(config, load_data(config, cache_dir)).history)
    assert kinds(found) == [LR_LOW, UPDATE_RATIO]  # not underfitting: the flat loss says why
    assert "conv1" in found[1].text() and "fc2" in found[1].text()  # every layer is named


def test_rising_loss_and_divergence_read_as_lr_too_high():
    rows = [{"train_loss": v, "train_acc": 0.5} for v in (0.7, 0.4, 0.9)]
    assert kinds(diagnose_run("trial", rows)) == [LR_HIGH]
    assert kinds(diagnose_run("trial", rows[:1], status="diverged")) == [LR_HIGH]


def test_no_gap_and_low_train_accuracy_read_as_underfitting():
    rows = [{"train_loss": v, "train_acc": 0.6, "val_acc": 0.6} for v in (1.5, 1.2)]
    assert kinds(diagnose_run("trial", rows)) == [UNDERFITTING]


def test_a_best_on_the_boundary_is_named_and_one_inside_is_not():
    space = parse_space({"lr": {"loguniform": [1e-4, 1e-1]}, "l2": {"loguniform": [1e-5, 10]}})
    edge = diagnose_boundary("fine best", {"lr": 0.09, "l2": 1e-3}, space)
    assert kinds(edge) == [BOUNDARY]
    assert "lr 0.09" in edge[0].text() and "upper" in edge[0].text()
    assert diagnose_boundary("fine best", {"lr": 3e-3, "l2": 1e-3}, space) == []


def test_dead_relus_fire_on_a_model_with_large_negative_biases(faces_config, faces):
    model = build_model(faces_config, faces, torch.Generator().manual_seed(0)).eval()
    x = device_split(faces.val, faces, _cpu()).x[:64]
    healthy = {k: _dead_fraction(a) for k, a in _activations(model, x).items()}
    assert diagnose_dead("final run", healthy) == []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                module.bias.fill_(-10.0)
    dead = {k: _dead_fraction(a) for k, a in _activations(model, x).items()}
    found = diagnose_dead("final run", dead)
    assert kinds(found) == [DEAD_RELU] * 4
    assert "100% of relu1" in found[0].text()


def _cpu():
    from trainables.device import select_runtime

    return select_runtime("cpu", None)


def test_a_trial_table_row_reads_like_an_epoch_row():
    """Parquet epochs (NaN where unmeasured) go through the same rules."""
    rows = pd.DataFrame(
        [{"train_loss": 0.7, "train_acc": 0.5, "val_acc": float("nan")}] * 2
    ).to_dict("records")
    assert kinds(diagnose_run("trial", rows)) == [LR_LOW]
