"""Options shared by several commands; TrialConfig's defaults are the options' defaults."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.names import TRACKING_WAIT_S, BudgetName
from trainables.config import LR_SCHEDULES, OPTIMIZERS, default
from trainables.datasets import default_cache_dir

BUDGET_CHOICE = click.Choice([str(b) for b in BudgetName])


def _opt(name: str, help: str, **kwargs):
    """An option whose default is TrialConfig's, so defaults live in one place."""
    flag = "--" + name.replace("_", "-")
    return click.option(flag, name, default=default(name), show_default=True, help=help, **kwargs)


def _switch(name: str, help: str):
    flag = name.replace("_", "-")
    return click.option(
        f"--{flag}/--no-{flag}", name, default=default(name), show_default=True, help=help
    )


CACHE_OPTION = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=default_cache_dir,
    envvar="BABYSITTER_CACHE",
    show_default="$BABYSITTER_CACHE or ~/.cache/babysitter",
    help="Where decoded images are cached.",
)
ADDRESS_OPTION = click.option(
    "--address",
    envvar="RAY_ADDRESS",
    help="Ray cluster to run the trials on [default: a local Ray runtime on this machine].",
)
TRACKING_OPTION = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking server for the study's runs, e.g. http://10.0.0.5:5000 [default: "
    "an SQLite store in the study folder, STUDY_DIR/mlflow/]. A study keeps the store it "
    "started with.",
)

WAIT_OPTION = click.option(
    "--tracking-wait",
    type=click.FloatRange(min=0),
    default=TRACKING_WAIT_S,
    show_default=True,
    help="Seconds to wait at the end of the study for a tracking server that went away.",
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
    _opt(
        "cv_folds",
        "Score by K-fold cross-validation on train + val (K models, no test); 0: on val.",
        type=int,
    ),
    _opt(
        "model",
        "The network: seed-cnn, torchvision.<name> (e.g. torchvision.resnet18, from scratch), "
        "package.module:factory or path/to/file.py:factory (called as factory(in_channels, "
        "num_classes, image_size, **arch)).",
    ),
    click.option(
        "--arch",
        multiple=True,
        default=(),
        callback=lambda ctx, param, given: _arch(given),
        metavar="NAME=VALUE",
        help="An argument of --model's factory (repeat for more); VALUE is read as YAML.",
    ),
    _switch("batch_norm", "Batch norm after each conv."),
    _switch("he_init", "He (Kaiming) init instead of Keras' Glorot default."),
    _opt("dropout", "Dropout before each FC layer."),
    _opt("width", "Width multiplier for the filters and the hidden FC layer."),
    _opt("optimizer", "Optimizer.", type=click.Choice(OPTIMIZERS)),
    _opt("lr", "Learning rate."),
    _opt("momentum", "SGD momentum."),
    _switch("nesterov", "Nesterov momentum (SGD)."),
    _opt("l2", "L2 penalty l2*sum(w^2) on conv and FC weights (not biases)."),
    _opt("weight_decay", "AdamW's decoupled weight decay (--optimizer adamw)."),
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


def _arch(given: tuple[str, ...]) -> dict:
    import yaml

    arch = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE, e.g. --arch depth=3")
        arch[name] = yaml.safe_load(value)
    return arch


def train_options(func):
    for option in reversed(TRAIN_OPTIONS):
        func = option(func)
    return func


def study_options(func):
    options = [
        click.argument("study", metavar="STUDY"),
        click.option("--data", help="Data path for the study (replaces the spec's trial.data)."),
        click.option(
            "--split-seed",
            type=click.IntRange(min=0),
            help="Seed of the train / val / test split (replaces the spec's trial.split_seed).",
        ),
        click.option(
            "--budget",
            type=BUDGET_CHOICE,
            default=str(BudgetName.FULL),
            show_default=True,
            help="smoke: seconds, for tests; demo: minutes on a laptop CPU; full: the spec.",
        ),
        click.option(
            "--study-dir",
            type=click.Path(path_type=Path),
            help="Study folder [default: studies/NAME-BUDGET]; an existing one is continued.",
        ),
        click.option("--cpus-per-trial", type=float, help="CPUs (and torch threads) per trial."),
        click.option("--gpus-per-trial", type=float, help="GPUs per trial; 0.25 packs 4 on one."),
        click.option("--max-concurrent", type=int, help="At most this many trials at once."),
        FUSE_OPTION,
        ADDRESS_OPTION,
        TRACKING_OPTION,
        WAIT_OPTION,
        CACHE_OPTION,
    ]
    for option in reversed(options):
        func = option(func)
    return func


FUSE_OPTION = click.option(
    "--fuse",
    metavar="auto|off|K",
    help="Train a stage's trials K at a time as one stacked model [default: the spec's "
    "resources.fuse, auto: on GPU trials, K measured; off on CPU].",
)


SKIP_SANITY_OPTION = click.option(
    "--skip-sanity",
    is_flag=True,
    help="Search without the sanity checks (they run first otherwise, and a hard failure "
    "stops the study).",
)


INSECURE_OPTION = click.option(
    "--allow-insecure",
    is_flag=True,
    help="Talk to a non-loopback http:// address without a Ray token (anyone who can reach "
    "it can run code on that cluster).",
)
