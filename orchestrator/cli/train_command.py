"""``babysit train``: one configuration trained and tested, in a run folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from orchestrator.cli.app import cli
from orchestrator.cli.options import CACHE_OPTION, train_options
from trainables.config import DATASETS, SEED_CNN


@cli.command()
@click.argument("dataset", type=click.Choice(DATASETS), metavar="DATASET")
@train_options
@click.option("--out", type=click.Path(path_type=Path), help="Run folder [default: runs/...].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@CACHE_OPTION
def train(dataset: str, out: Path | None, resume: bool, cache_dir: Path, **options) -> None:
    """Train one configuration on DATASET (cifar10, faces or imagefolder) and test it.

    Prints a line per epoch, writes config.json, metrics.jsonl (one JSON object per epoch),
    checkpoint.pt (every epoch) and test_metrics.json to --out.
    """
    from orchestrator.console import epoch_line, test_summary
    from orchestrator.run_folder import RunFolder, train_run
    from trainables.config import TrialConfig
    from trainables.datasets import load_data
    from trainables.epoch import DIVERGED
    from trainables.model import parameter_count
    from trainables.trial_state import check_model

    config = TrialConfig(dataset=dataset, **options)
    out = out or Path("runs") / f"train-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    data = load_data(config, cache_dir)
    click.echo(f"data     {data.summary()}  ({time.perf_counter() - t0:.1f} s)")
    params = parameter_count(check_model(config, data))  # before anything is written
    folder = RunFolder.open(out, resume=resume)
    name = "seed CNN" if config.model == SEED_CNN else config.model
    click.echo(f"model    {name}, {params:,} parameters")
    if folder.start_epoch:
        click.echo(f"resume   from epoch {folder.start_epoch} in {out}")
    progress = _EpochProgress(config.epochs)

    def on_epoch(report) -> None:
        progress.close()
        click.echo(epoch_line(report.epoch, config.epochs, report.metrics, report.status))

    outcome = train_run(folder, config, data, on_epoch=on_epoch, on_batch=progress.update)
    if outcome.status == DIVERGED:
        click.echo(f"diverged {outcome.reason}; no test evaluation. Try a lower --lr.")
        return
    if outcome.test is None:
        last = folder.read_metrics()[-1]
        click.echo(
            f"cross-validated: val_acc {last['val_acc']:.4f} +- {last['val_acc_se']:.4f} over "
            f"{config.cv_folds} folds; no test evaluation (train without --cv-folds to test)"
        )
        return
    click.echo(test_summary(outcome.test))
    click.echo(f"saved    {out}/ (config.json, metrics.jsonl, checkpoint.pt, test_metrics.json)")


class _EpochProgress:
    """A batch progress bar on a terminal; nothing when stderr is a pipe or a file."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.epoch = 0
        self.bar = None
        self.enabled = sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.epoch += 1
            self.bar = click.progressbar(
                length=total, label=f"epoch {self.epoch}/{self.epochs}", file=sys.stderr
            )
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
