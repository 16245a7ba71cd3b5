"""One vocabulary from the training loop to the tables and MLflow: a name the loop reports is
one the tables keep and, unless it is the same at every epoch, one MLflow plots."""

from __future__ import annotations

from orchestrator.search.results import EPOCH_COLUMNS
from orchestrator.tracking.store import TRACKED, epoch_metrics
from trainables.config import TrialConfig
from trainables.train import train


def test_every_name_the_loop_reports_reaches_the_tables_and_mlflow(faces):
    seen: list[dict] = []
    config = TrialConfig(dataset="faces", epochs=1, train_subset=200, threads=1)
    train(config, faces, on_epoch=lambda report: seen.append(report.row()))
    (row,) = seen
    kept = {k for k in row if k in EPOCH_COLUMNS or k.startswith("update_ratio/")}
    assert kept == set(row), f"reported but not kept: {set(row) - kept}"
    plotted = set(epoch_metrics(row))
    assert {k for k in row if k in TRACKED} <= plotted
    assert {"val_acc", "train_loss", "lr", "update_ratio/conv1"} <= plotted
