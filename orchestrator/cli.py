"""``babysit``: the command line. Errors a user can cause end in one line and a non-zero exit."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from trainables.config import DATASETS, LR_SCHEDULES, OPTIMIZERS, default
from trainables.errors import BabysitterError


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "babysitter"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """babysitter: babysit a PyTorch network, then search its hyperparameters.

    Start with `babysit train faces --data PATH` to train one configuration.
    """


def _opt(name: str, help: str, **kwargs):
    """An option whose default is TrialConfig's, so defaults live in one place."""
    flag = "--" + name.replace("_", "-")
    return click.option(flag, name, default=default(name), show_default=True, help=help, **kwargs)


def _switch(name: str, help: str):
    flag = name.replace("_", "-")
    return click.option(
        f"--{flag}/--no-{flag}", name, default=default(name), show_default=True, help=help
    )


TRAIN_OPTIONS = [
    click.option(
        "--data",
        type=click.Path(path_type=str),
        help="Folder or .tar/.tar.gz of class folders (train/<class>/, test/<class>/ or "
        "<class>/). cifar10 without --data uses torchvision's copy (downloaded when online).",
    ),
    _opt("val_fraction", "Share of the training images held out for validation (stratified)."),
    _opt("test_fraction", "Share held out for testing when the data has no test/ folder."),
    _opt("split_seed", "Seed of the val/test split (kept apart from --seed)."),
    _opt("train_subset", "Train on a stratified subset of N images.", type=int),
    _switch("batch_norm", "Batch norm after each conv."),
    _switch("he_init", "He (Kaiming) init instead of Keras' Glorot default."),
    _opt("dropout", "Dropout before each FC layer."),
    _opt("width", "Width multiplier for the filters and the hidden FC layer."),
    _opt("optimizer", "Optimizer.", type=click.Choice(OPTIMIZERS)),
    _opt("lr", "Learning rate."),
    _opt("momentum", "SGD momentum."),
    _switch("nesterov", "Nesterov momentum (SGD)."),
    _opt("l2", "L2 penalty l2*sum(w^2) on conv and FC weights (not biases)."),
    _opt("batch_size", "Batch size."),
    _opt("epochs", "Epochs."),
    _opt("lr_schedule", "Learning-rate schedule.", type=click.Choice(LR_SCHEDULES)),
    _opt("lr_step_epochs", "step schedule: epochs between decays."),
    _opt("lr_step_gamma", "step schedule: decay factor."),
    _switch("augment", "Seed augmentation: rotation, shifts, shear, zoom, horizontal flip."),
    _opt("seed", "Training seed (init, shuffling, augmentation, dropout)."),
    _opt("device", "auto picks cuda when present.", type=click.Choice(["auto", "cpu", "cuda"])),
    _opt("threads", "CPU threads for torch (default: torch's own).", type=int),
    _opt("divergence_factor", "Stop as diverged when the loss exceeds this times the initial."),
]


def _train_options(func):
    for option in reversed(TRAIN_OPTIONS):
        func = option(func)
    return func


@cli.command()
@click.argument("dataset", type=click.Choice(DATASETS), metavar="DATASET")
@_train_options
@click.option("--out", type=click.Path(path_type=Path), help="Run folder [default: runs/...].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=default_cache_dir,
    envvar="BABYSITTER_CACHE",
    show_default="$BABYSITTER_CACHE or ~/.cache/babysitter",
    help="Where decoded images are cached.",
)
def train(dataset: str, out: Path | None, resume: bool, cache_dir: Path, **options) -> None:
    """Train one configuration on DATASET (cifar10, faces or imagefolder) and test it.

    Prints a line per epoch, writes config.json, metrics.jsonl (one JSON object per epoch),
    checkpoint.pt (every epoch) and test_metrics.json to --out.
    """
    from orchestrator.console import epoch_line, test_summary
    from orchestrator.run_folder import RunFolder
    from trainables.config import TrialConfig
    from trainables.datasets import load_data
    from trainables.model import parameter_count
    from trainables.train import DIVERGED, build_model, evaluate_on_test
    from trainables.train import train as run_training

    config = TrialConfig(dataset=dataset, **options)
    out = out or Path("runs") / f"train-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = RunFolder.open(out, resume=resume)
    t0 = time.perf_counter()
    data = load_data(config, cache_dir)
    click.echo(f"data     {data.summary()}  ({time.perf_counter() - t0:.1f} s)")
    params = parameter_count(build_model(config, data))
    click.echo(f"model    seed CNN, {params:,} parameters")
    if folder.start_epoch:
        click.echo(f"resume   from epoch {folder.start_epoch} in {out}")
    folder.write_json("config.json", config.to_dict())
    progress = _EpochProgress(config.epochs)

    def on_epoch(report) -> None:
        progress.close()
        folder.append_metrics({**report.metrics, "status": report.status})
        click.echo(epoch_line(report.epoch, config.epochs, report.metrics, report.status))

    result = run_training(
        config,
        data,
        on_epoch=on_epoch,
        on_batch=progress.update,
        checkpoint_path=folder.checkpoint,
        resume=resume,
    )
    if result.status == DIVERGED:
        click.echo(f"diverged {result.reason}; no test evaluation. Try a lower --lr.")
        folder.write_json("result.json", {"status": DIVERGED, "reason": result.reason})
        return
    report = evaluate_on_test(result.model, data, config)
    folder.write_json("test_metrics.json", report.to_dict())
    folder.write_json("result.json", {"status": result.status, "test_accuracy": report.accuracy})
    click.echo(test_summary(report))
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one line per error, exit 2 for usage errors and 1 for bad input."""
    try:
        cli.main(args=argv, prog_name="babysit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except BabysitterError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("Interrupted.", err=True)
        sys.exit(130)
