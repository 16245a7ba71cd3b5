"""The study commands: sanity, run, search, resume, sync, results, ui."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestrator.cli.app import cli
from orchestrator.cli.options import (
    ADDRESS_OPTION,
    CACHE_OPTION,
    SKIP_SANITY_OPTION,
    TRACKING_OPTION,
    WAIT_OPTION,
    study_options,
)
from orchestrator.names import SEARCH_STAGES, Step
from trainables.errors import BabysitterError


@cli.command()
@study_options
def sanity(**options) -> None:
    """Run the babysitting checks on STUDY's data and model, before any search: data
    zero-centered, initial loss ~ ln(C), regularization raises the loss, 20 examples overfit,
    an lr probe that proposes the coarse lr range, update / weight ratios.

    Writes STUDY_DIR/sanity.json and the probe plot; exits 1 when a hard check fails. A study
    run later on the same folder reuses a passing result (and `lr: auto` its lr range).
    """
    _start_study(target=Step.SANITY, skip_sanity=False, **options)


@cli.command()
@study_options
@SKIP_SANITY_OPTION
def run(**options) -> None:
    """Run the whole study: sanity checks, coarse search, narrowing, fine search, final
    training, test.

    STUDY is a preset (faces, cifar10; imagefolder with --data DIR: your own class folders)
    or a YAML study spec (`babysit init DIR` writes one). Re-running it on the same study
    folder continues where it stopped.
    """
    _start_study(target=Step.FINAL, **options)


@cli.command()
@study_options
@SKIP_SANITY_OPTION
@click.option("--stage", type=click.Choice([str(s) for s in SEARCH_STAGES]), required=True)
def search(stage: str, **options) -> None:
    """Run one search stage of STUDY (fine needs the coarse stage's results)."""
    _start_study(target=Step(stage), **options)


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR")
@ADDRESS_OPTION
@TRACKING_OPTION
@WAIT_OPTION
@CACHE_OPTION
def resume(
    study_dir: Path,
    address: str | None,
    tracking_uri: str | None,
    tracking_wait: float,
    cache_dir: Path,
) -> None:
    """Continue an interrupted study: finished trials are kept, the interrupted stage goes on."""
    from orchestrator import session
    from orchestrator.study.folder import StudyFolder

    options = session.SessionOptions(cache_dir, address, tracking_uri, tracking_wait, click.echo)
    session.resume(StudyFolder(study_dir), options)


def _start_study(
    target: Step,
    address: str | None,
    tracking_uri: str | None,
    tracking_wait: float,
    cache_dir: Path,
    **asked,
) -> None:
    from orchestrator import session
    from orchestrator.cli.request import StudyRequest
    from orchestrator.study.folder import StudyFolder

    request = StudyRequest.from_options(**asked)
    folder = StudyFolder(request.folder())
    options = session.SessionOptions(cache_dir, address, tracking_uri, tracking_wait, click.echo)
    session.run_new(
        request.spec, folder, target, request.budget, options, skip_sanity=request.skip_sanity
    )


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR")
@TRACKING_OPTION
@click.option(
    "--rebuild",
    is_flag=True,
    help="Set the study's own MLflow store aside (damaged, or from an older babysitter) and "
    "record the whole study again from its folder.",
)
def sync(study_dir: Path, tracking_uri: str | None, rebuild: bool) -> None:
    """Send the study's records that have not reached MLflow yet (its tracking server was away
    when a stage ended). Safe to repeat: nothing is sent twice."""
    from orchestrator import session
    from orchestrator.cli.options import default_cache_dir
    from orchestrator.study.folder import StudyFolder

    options = session.SessionOptions(
        default_cache_dir(), tracking_uri=tracking_uri, echo=click.echo
    )
    sent, left = session.sync(StudyFolder(study_dir), options, rebuild=rebuild)
    if not sent and not left:
        click.echo("mlflow   up to date: nothing waits")
        return
    click.echo(f"mlflow   recorded: {', '.join(sent) or 'nothing'}")
    if left:
        raise BabysitterError(
            f"MLflow did not take the records of {', '.join(left)}; check the server and run "
            f"`babysit sync {study_dir}` again"
        )


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="[STUDY_DIR]", required=False)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to serve on; another one (0.0.0.0) shows every run to the network.",
)
@click.option("--port", default=5000, show_default=True, type=int)
def ui(study_dir: Path | None, host: str, port: int) -> None:
    """Serve the MLflow UI on a study's own store [default: the newest study in ./studies]."""
    import signal
    import socket
    import subprocess

    from orchestrator.cli.request import STUDIES
    from orchestrator.study.folder import StudyFolder
    from orchestrator.tracking.sqlite_store import embedded_uri, relocate
    from orchestrator.tracking.store import experiment_id
    from orchestrator.tracking.ui_text import runs_url

    folder = StudyFolder(study_dir or _newest_study(STUDIES))
    spec = folder.read_spec()
    recorded = folder.read_state().tracking_uri
    if recorded:
        click.echo(f"study {folder.path} records to {recorded}: open that server's UI")
        return
    if not (folder.path / "mlflow" / "mlflow.db").exists():
        raise BabysitterError(
            f"study {str(folder.path)!r} has no MLflow store yet; run or resume it first"
        )
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BabysitterError(
                f"--host {host} --port {port}: cannot serve there ({exc.strerror}); pass "
                "another --port"
            ) from None
    relocate(folder.path, spec.name)  # a copied or moved folder shows its own artifacts
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri"]
    command += [embedded_uri(folder.path), "--host", host, "--port", str(port), "--workers", "1"]
    url = f"http://{host}:{port}"
    found = experiment_id(embedded_uri(folder.path), spec.name)
    runs = runs_url(url, found) if found else url
    click.echo(f"MLflow UI for {folder.path} at {url} (Ctrl-C stops it); the study's runs: {runs}")
    # Training runs need none of the server's GenAI job workers; without them it starts in
    # about 6 s instead of 11 s here (set the variable to true to keep them).
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain `kill` stops the UI too
    try:
        code = server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    if code != 0:
        lines = (server.stderr.read().decode(errors="replace") if server.stderr else "").split("\n")
        last = [line for line in lines if line.strip()][-1:] or [f"exit code {code}"]
        raise BabysitterError(f"the MLflow UI server stopped: {last[0][:200]}")


def _newest_study(root: Path) -> Path:
    studies = sorted(root.glob("*/spec.yaml"), key=lambda p: p.stat().st_mtime)
    if not studies:
        raise BabysitterError(
            f"no study in {str(root)!r}; pass STUDY_DIR or start one with `babysit run STUDY`"
        )
    return studies[-1].parent


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR")
@click.option(
    "--stage",
    help="One step: a search round (coarse, fine, fine2, ...), sanity or final [default: every "
    "search round].",
)
@click.option("--epochs", "per_epoch", is_flag=True, help="One row per trial and epoch.")
@click.option(
    "--sort",
    "sort_by",
    help="Order each round by this column (accuracies best first, anything else smallest "
    "first) [default: the ranking].",
)
@click.option("--top", type=click.IntRange(min=1), help="Only the first N trials of each round.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write a .csv or .parquet file instead of printing.",
)
def results(
    study_dir: Path,
    stage: str | None,
    per_epoch: bool,
    sort_by: str | None,
    top: int | None,
    out: Path | None,
) -> None:
    """Print the trials of a study, best first (status, searched settings, score with its
    error; * marks each round's winner), or export every column (full config, per-epoch
    metrics with --epochs) to CSV or Parquet. --stage sanity and --stage final print those
    steps' records."""
    from orchestrator.cli.results_view import results_table, step_text
    from orchestrator.study.folder import StudyFolder

    folder = StudyFolder(study_dir)
    if stage in (Step.SANITY, Step.FINAL):
        click.echo(step_text(folder, stage))
        return
    frame, footer = results_table(folder, stage, per_epoch, sort_by, top, every=out is not None)
    if out is None:
        with pd_display():
            click.echo(frame.to_string(index=False))
        click.echo(
            f"({len(frame)} rows; {footer}; --out FILE.csv or .parquet exports every column)"
        )
        return
    if out.suffix not in (".csv", ".parquet"):
        raise BabysitterError(f"--out {str(out)!r}: the name must end in .csv or .parquet")
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    click.echo(f"wrote {len(frame)} rows to {out}")


def pd_display():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format)


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write it [default: STUDY_DIR/report.html].",
)
@CACHE_OPTION
def report(study_dir: Path, out: Path | None, cache_dir: Path) -> None:
    """Write the study's command center as one HTML file (figures embedded, opens from disk):
    search map, curves, diagnosis, update / weight ratios, the model's insides, test report,
    what mattered, sanity checks. Works on a running study too."""
    from orchestrator.report.writer import write_report

    written = write_report(study_dir, out, cache_dir)
    for finding in written.findings + written.trial_findings:
        click.echo(f"diagnose {finding.text()}")
    click.echo(f"report   {written.path} ({len(written.report.images)} figures)")


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR")
def summary(study_dir: Path) -> None:
    """Print what a study found, from its records alone (no data is decoded): each round's top
    trials, how narrowing moved the ranges and why, the chosen config, the test report and the
    diagnosis."""
    from orchestrator.report.digest import digest

    click.echo(digest(study_dir))


@cli.command()
@click.argument("data", type=click.Path(path_type=Path), metavar="DIR")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write the spec.  [default: NAME.yaml, NAME after DIR]",
)
@CACHE_OPTION
def init(data: Path, out: Path | None, cache_dir: Path) -> None:
    """Write a study spec for DIR, a folder (or .tar/.tar.gz) of class folders of images: what
    was found there and every key with the recipe's default, commented, to edit before
    `babysit run SPEC`. (`babysit run imagefolder --data DIR` runs the defaults as they are.)"""
    from orchestrator.study.spec import default_name
    from orchestrator.study.starter import found, starter_spec
    from trainables.image_folder import read_image_set

    data = data.resolve()
    out = out or Path(f"{default_name({'data': str(data)})}.yaml")
    if out.exists():
        raise BabysitterError(f"--out '{out}' already exists; pass another --out or remove it")
    images = read_image_set(data, cache_dir)
    text = starter_spec(data, images)
    out.write_text(text)
    for line in found(images):
        click.echo(f"found    {line}")
    click.echo(f"wrote    {out}: the recipe's defaults for {data.name}; edit it, then")
    click.echo(f"         babysit run {out}")
