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

    Start with `babysit sanity faces --data PATH` to check the setup, `babysit run faces --data
    PATH` to search.
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
    default=120,
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
    from trainables.model import parameter_count
    from trainables.train import DIVERGED
    from trainables.trial_state import build_model

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
    progress = _EpochProgress(config.epochs)

    def on_epoch(report) -> None:
        progress.close()
        click.echo(epoch_line(report.epoch, config.epochs, report.metrics, report.status))

    outcome = train_run(folder, config, data, on_epoch=on_epoch, on_batch=progress.update)
    if outcome.status == DIVERGED:
        click.echo(f"diverged {outcome.reason}; no test evaluation. Try a lower --lr.")
        return
    click.echo(test_summary(outcome.test))
    click.echo(f"saved    {out}/ (config.json, metrics.jsonl, checkpoint.pt, test_metrics.json)")


def _study_options(func):
    options = [
        click.argument("study", metavar="STUDY"),
        click.option("--data", help="Data path for the study (replaces the spec's trial.data)."),
        click.option(
            "--budget",
            type=click.Choice(["smoke", "demo", "full"]),
            default="full",
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
        ADDRESS_OPTION,
        TRACKING_OPTION,
        WAIT_OPTION,
        CACHE_OPTION,
    ]
    for option in reversed(options):
        func = option(func)
    return func


SKIP_SANITY_OPTION = click.option(
    "--skip-sanity",
    is_flag=True,
    help="Search without the sanity checks (they run first otherwise, and a hard failure "
    "stops the study).",
)


@cli.command()
@_study_options
def sanity(**options) -> None:
    """Run the babysitting checks on STUDY's data and model, before any search: data
    zero-centered, initial loss ~ ln(C), regularization raises the loss, 20 examples overfit,
    an lr probe that proposes the coarse lr range, update / weight ratios.

    Writes STUDY_DIR/sanity.json and the probe plot; exits 1 when a hard check fails. A study
    run later on the same folder reuses a passing result (and `lr: auto` its lr range).
    """
    _start_study(target="sanity", skip_sanity=False, **options)


@cli.command()
@_study_options
@SKIP_SANITY_OPTION
def run(**options) -> None:
    """Run the whole study: sanity checks, coarse search, narrowing, fine search, final
    training, test.

    STUDY is a preset (faces, cifar10) or a YAML study spec. Re-running it on the same study
    folder continues where it stopped.
    """
    _start_study(target="final", **options)


@cli.command()
@_study_options
@SKIP_SANITY_OPTION
@click.option("--stage", type=click.Choice(["coarse", "fine"]), required=True)
def search(stage: str, **options) -> None:
    """Run one search stage of STUDY (fine needs the coarse stage's results)."""
    _start_study(target=stage, **options)


INSECURE_OPTION = click.option(
    "--allow-insecure",
    is_flag=True,
    help="Talk to a non-loopback http:// address without a Ray token (anyone who can reach "
    "it can run code on that cluster).",
)


@cli.command()
@click.argument("study", metavar="STUDY")
@click.option("--address", help="Ray Jobs: the head's dashboard, e.g. http://10.0.0.5:8265.")
@click.option("--slurm", "where", flag_value="slurm", help="Submit an sbatch job to SLURM.")
@click.option("--kuberay", "where", flag_value="kuberay", help="Apply a KubeRay RayJob.")
@click.option("--dry-run", is_flag=True, help="SLURM, KubeRay: print the file instead.")
@click.option("--follow", is_flag=True, help="Ray Jobs: print the job's log until it ends.")
@INSECURE_OPTION
@click.option("--data", help="Data path as the cluster's nodes see it.")
@click.option(
    "--budget", type=click.Choice(["smoke", "demo", "full"]), default="full", show_default=True
)
@click.option(
    "--study-dir",
    type=click.Path(path_type=Path),
    help="Study folder on storage every node sees (absolute for Ray Jobs) [default: "
    "./studies/NAME-BUDGET (SLURM), /studies/NAME-BUDGET on the shared volume (KubeRay)].",
)
@TRACKING_OPTION
@click.option("--cpus-per-trial", type=float, help="CPUs per trial.")
@click.option("--gpus-per-trial", type=float, help="GPUs per trial [default: 0.25 on GPU nodes].")
@click.option("--max-concurrent", type=int, help="At most this many trials at once.")
@SKIP_SANITY_OPTION
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="SLURM.")
@click.option("--gpus-per-node", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--partition", help="SLURM partition.")
@click.option("--account", help="SLURM account.")
@click.option("--time", "time_limit", default="04:00:00", show_default=True, help="SLURM.")
@click.option("--image", default="babysitter:0.1.0", show_default=True, help="KubeRay image.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--gpus-per-worker", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--cpus-per-worker", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--memory-per-worker", default="32Gi", show_default=True)
@click.option("--studies-claim", default="babysit-studies", show_default=True, help="PVC.")
@click.option("--data-claim", default="babysit-data", show_default=True, help="PVC.")
def submit(
    study: str,
    address: str | None,
    where: str | None,
    dry_run: bool,
    follow: bool,
    allow_insecure: bool,
    data: str | None,
    budget: str,
    study_dir: Path | None,
    tracking_uri: str | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    max_concurrent: int | None,
    skip_sanity: bool,
    **cluster,
) -> None:
    """Run STUDY on a cluster: `babysit run` as a Ray job (--address), in a SLURM job (a Ray
    head on the first node, workers on the others) or in a KubeRay RayJob. Preemption,
    requeue and resubmission resume the study."""
    from orchestrator import submission
    from orchestrator.study_spec import load_spec

    if (address is None) == (where is None):
        raise BabysitterError("babysit submit needs one place: --address URL, --slurm or --kuberay")
    if address is not None:
        from orchestrator import ray_jobs

        address = ray_jobs.dashboard_address(address, allow_insecure)
    elif not dry_run:
        submission.require("sbatch" if where == "slurm" else "kubectl")
    spec = load_spec(study)
    gpus = {"slurm": cluster["gpus_per_node"], "kuberay": cluster["gpus_per_worker"]}.get(where, 0)
    if gpus_per_trial is None and gpus > 0 and spec.resources.gpus_per_trial == 0:
        gpus_per_trial = 0.25
        click.echo(
            "submit   trials get --gpus-per-trial 0.25 (four per GPU); pass it to change", err=True
        )
    resources = {
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
        "max_concurrent": max_concurrent,
    }
    spec = spec.with_changes(resources={k: v for k, v in resources.items() if v is not None})
    options = {"data": data, "tracking_uri": tracking_uri, **resources}
    options["skip_sanity"] = skip_sanity
    if address is not None:
        _submit_ray_job(address, study, spec, budget, study_dir, options, follow)
    elif where == "slurm":
        _submit_slurm(study, spec, budget, study_dir, options, dry_run, cluster)
    else:
        _submit_kuberay(spec, budget, study_dir, options, dry_run, cluster)


def _submit_ray_job(address, study, spec, budget, study_dir, options, follow) -> None:
    from orchestrator import ray_jobs, submission

    for flag, path in (("--study-dir", study_dir), ("--data", options["data"])):
        if flag == "--data" and path is None:
            continue
        if path is None or not Path(path).is_absolute():
            raise BabysitterError(
                f"{flag} {path or '(none)'}: a Ray job runs on the cluster, so it needs an "
                "absolute path on storage every node sees (NFS, a shared volume), e.g. "
                f"/shared/{'studies/' + spec.name if flag == '--study-dir' else 'data'}"
            )
    spec_text = None if Path(study).suffix not in (".yaml", ".yml") else Path(study).read_text()
    args = submission.run_words(str(study_dir), budget, options)
    with ray_jobs.jobs_api(address) as client:
        job = ray_jobs.submit(client, study, str(study_dir), args, spec_text)
        click.echo(f"job      {job} submitted to {address}: babysit run {spec.name} in {study_dir}")
        if not follow:
            click.echo(f"follow   babysit jobs logs {job} --address {address} --follow")
            return
        ray_jobs.follow(client, job, click.echo)
        status = str(client.get_job_status(job).value)
    click.echo(f"job      {job} {status}")
    if status != "SUCCEEDED":
        raise BabysitterError(f"job {job} ended {status}; its log is above")


def _submit_slurm(study, spec, budget, study_dir, options, dry_run, cluster) -> None:
    from orchestrator import submission

    target = Path(study).resolve() if Path(study).is_file() else study
    folder = (study_dir or Path("studies") / f"{spec.name}-{budget}").resolve()
    args = submission.run_arguments(str(target), str(folder), budget, options)
    script = submission.slurm_script(
        study,
        folder,
        args,
        nodes=cluster["nodes"],
        gpus_per_node=cluster["gpus_per_node"],
        cpus_per_node=cluster["cpus_per_node"],
        time=cluster["time_limit"],
        partition=cluster["partition"],
        account=cluster["account"],
    )
    if dry_run:
        click.echo(script, nl=False)
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "babysit.sbatch").write_text(script)
    out = submission.hand_over(["sbatch", str(folder / "babysit.sbatch")])
    job = out.split()[-1] if out else "?"
    log = folder / f"slurm-{job}.out"
    click.echo(f"slurm    {out}; follow it with `squeue -j {job}` and `tail -f {log}`")


def _submit_kuberay(spec, budget, study_dir, options, dry_run, cluster) -> None:
    from orchestrator import submission

    folder = study_dir or Path("/studies") / f"{spec.name}-{budget}"
    args = submission.run_arguments("/etc/babysitter/spec.yaml", str(folder), budget, options)
    manifest = submission.rayjob_manifest(
        spec,
        budget,
        args,
        image=cluster["image"],
        workers=cluster["workers"],
        gpus_per_worker=cluster["gpus_per_worker"],
        cpus_per_worker=cluster["cpus_per_worker"],
        memory_per_worker=cluster["memory_per_worker"],
        studies_claim=cluster["studies_claim"],
        data_claim=cluster["data_claim"],
    )
    if dry_run:
        click.echo(manifest, nl=False)
        return
    out = submission.hand_over(["kubectl", "apply", "-f", "-"], stdin=manifest)
    applied = out.splitlines()[-1] if out else "applied"
    click.echo(f"kuberay  {applied}; follow it with `kubectl get rayjobs`")


@cli.group()
def jobs() -> None:
    """Follow the Ray jobs `babysit submit --address` started."""


def _jobs_options(func):
    func = INSECURE_OPTION(func)
    return click.option(
        "--address", required=True, help="The head's dashboard, e.g. http://10.0.0.5:8265."
    )(func)


def _jobs_client(address: str, allow_insecure: bool):
    from orchestrator import ray_jobs

    return ray_jobs.jobs_api(ray_jobs.dashboard_address(address, allow_insecure))


@jobs.command("list")
@_jobs_options
def jobs_list(address: str, allow_insecure: bool) -> None:
    """Every job on the cluster, newest last."""
    from orchestrator.ray_jobs import STUDY_KEY

    with _jobs_client(address, allow_insecure) as client:
        found = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    for job in found:
        study = (job.metadata or {}).get(STUDY_KEY, "-")
        click.echo(f"{job.submission_id or job.job_id}  {job.status.value!s:<9}  {study}")
    click.echo(f"({len(found)} jobs)")


@jobs.command("status")
@click.argument("job")
@_jobs_options
def jobs_status(job: str, address: str, allow_insecure: bool) -> None:
    """One job's status."""
    with _jobs_client(address, allow_insecure) as client:
        info = client.get_job_info(job)
    click.echo(f"{job}  {info.status.value}  {info.message or ''}".rstrip())


@jobs.command("logs")
@click.argument("job")
@click.option("--follow", is_flag=True, help="Keep printing until the job ends.")
@_jobs_options
def jobs_logs(job: str, follow: bool, address: str, allow_insecure: bool) -> None:
    """One job's log."""
    from orchestrator import ray_jobs

    with _jobs_client(address, allow_insecure) as client:
        if follow:
            ray_jobs.follow(client, job, click.echo)
        else:
            click.echo(client.get_job_logs(job).rstrip("\n"))


@jobs.command("stop")
@click.argument("job")
@_jobs_options
def jobs_stop(job: str, address: str, allow_insecure: bool) -> None:
    """Stop a job; `babysit submit` again (or `babysit resume` on the cluster) continues it."""
    with _jobs_client(address, allow_insecure) as client:
        stopped = client.stop_job(job)
    click.echo(f"{job}  {'stopping' if stopped else 'had already ended'}")


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
    from orchestrator.study_folder import StudyFolder

    folder = StudyFolder(study_dir)
    spec = folder.read_spec()
    uri = _check_tracking(folder, spec, tracking_uri)
    from orchestrator.ray_runtime import check_resources, ray_runtime
    from orchestrator.study import load_study_data, run_study

    spec, data = load_study_data(spec, None, cache_dir, click.echo)
    target = folder.read_target()
    with ray_runtime(address, needed=folder.needs_search(target)):
        check_resources(spec.resources)
        _check_shared_storage(folder.path)
        tracker = _tracker(folder, spec, uri, tracking_wait)
        skip = folder.read_state().get("skip_sanity", False)
        run_study(
            folder, spec, data, target=target, echo=click.echo, tracker=tracker, skip_sanity=skip
        )


def _check_shared_storage(study_dir: Path) -> None:
    from orchestrator.ray_runtime import check_shared_storage

    nodes = check_shared_storage(study_dir)
    if nodes:
        click.echo(f"cluster  all {nodes} Ray nodes see the study folder {study_dir}")


def _check_tracking(folder, spec, tracking_uri: str | None) -> str | None:
    """The study's tracking URI, a server checked now: a wrong one stops the study before any
    data is decoded or trial started."""
    from orchestrator.study_record import tracking_choice, tracking_target
    from orchestrator.tracking import connect

    uri = tracking_choice(folder, tracking_uri)
    if uri is not None:  # the study folder's own store is made with the folder, not before
        connect(tracking_target(folder, spec, uri), click.echo)
    return uri


def _tracker(folder, spec, uri: str | None, wait_s: float = 0):
    from orchestrator.study_record import tracking_target
    from orchestrator.tracking import connect

    if "tracking_uri" not in folder.read_state():
        folder.write_state(tracking_uri=uri)
    target = tracking_target(folder, spec, uri, folder.study_id(), wait_s)
    return connect(target, click.echo)


def _start_study(
    target: str,
    study: str,
    data: str | None,
    budget: str,
    study_dir: Path | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    max_concurrent: int | None,
    address: str | None,
    tracking_uri: str | None,
    tracking_wait: float,
    cache_dir: Path,
    skip_sanity: bool,
) -> None:
    from orchestrator.study_folder import StudyFolder
    from orchestrator.study_spec import load_spec

    spec = load_spec(study)
    resources = {
        key: value
        for key, value in (
            ("cpus_per_trial", cpus_per_trial),
            ("gpus_per_trial", gpus_per_trial),
            ("max_concurrent", max_concurrent),
        )
        if value is not None
    }
    changes: dict = {"resources": resources}
    if data is not None:
        changes["trial"] = {"data": data}
    spec = spec.with_changes(**changes)
    folder = StudyFolder(study_dir or Path("studies") / f"{spec.name}-{budget}")
    if skip_sanity and spec.lr_auto and folder.read_sanity() is None:
        raise BabysitterError(
            f"--skip-sanity: {study} says search_space.lr: auto, whose range comes from the "
            "sanity checks' lr probe; drop --skip-sanity, or give lr a range"
        )
    if target == "fine" and not (folder.results / "coarse.parquet").exists():
        raise BabysitterError(
            f"the fine stage narrows the coarse stage's results, and {str(folder.path)!r} has "
            f"none; run `babysit search {study} --stage coarse` first"
        )
    uri = _check_tracking(folder, spec, tracking_uri)
    from orchestrator.ray_runtime import check_resources, ray_runtime
    from orchestrator.study import load_study_data, run_study

    spec, splits = load_study_data(spec, budget, cache_dir, click.echo)
    with ray_runtime(address, needed=folder.needs_search(target)):
        check_resources(spec.resources)
        _check_shared_storage(folder.path)
        folder.create(spec, target)
        if target != "sanity":
            folder.write_state(skip_sanity=skip_sanity)
        tracker = _tracker(folder, spec, uri, tracking_wait)
        run_study(
            folder,
            spec,
            splits,
            target=target,
            echo=click.echo,
            tracker=tracker,
            skip_sanity=skip_sanity,
        )


@cli.command()
@click.argument("study_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR")
@TRACKING_OPTION
def sync(study_dir: Path, tracking_uri: str | None) -> None:
    """Send the study's records that have not reached MLflow yet (its tracking server was away
    when a stage ended). Safe to repeat: nothing is sent twice."""
    from orchestrator.study_folder import StudyFolder
    from orchestrator.study_record import pending, record_pending

    folder = StudyFolder(study_dir)
    spec = folder.read_spec()
    uri = _check_tracking(folder, spec, tracking_uri)
    waiting = pending(folder)
    if not waiting:
        click.echo("mlflow   up to date: nothing waits")
        return
    left = record_pending(_tracker(folder, spec, uri), folder, spec)
    sent = [step for step in waiting if step not in left]
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

    from orchestrator.study_folder import StudyFolder
    from orchestrator.tracking import embedded_uri

    folder = StudyFolder(study_dir or _newest_study(Path("studies")))
    folder.read_spec()
    recorded = folder.read_state().get("tracking_uri")
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
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri"]
    command += [embedded_uri(folder.path), "--host", host, "--port", str(port), "--workers", "1"]
    click.echo(f"MLflow UI for {folder.path} at http://{host}:{port} (Ctrl-C stops it)")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
@click.option("--stage", type=click.Choice(["coarse", "fine"]), help="One stage [default: all].")
@click.option("--epochs", "per_epoch", is_flag=True, help="One row per trial and epoch.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write a .csv or .parquet file instead of printing.",
)
def results(study_dir: Path, stage: str | None, per_epoch: bool, out: Path | None) -> None:
    """Print the trials of a study (status, searched settings, metrics) or export every column
    (full config, per-epoch metrics with --epochs) to CSV or Parquet."""
    import pandas as pd

    from orchestrator.results import read_tables
    from orchestrator.study_folder import StudyFolder

    folder = StudyFolder(study_dir)
    spec = folder.read_spec()
    frames = []
    for name in [stage] if stage else ["coarse", "fine"]:
        tables = read_tables(folder.results, name)
        if tables is not None:
            frames.append(tables[1] if per_epoch else tables[0])
    if not frames:
        raise BabysitterError(
            f"{str(study_dir)!r} has no finished {stage or 'search'} stage yet; "
            f"run or resume the study first"
        )
    frame = pd.concat(frames, ignore_index=True)
    if out is None:
        if per_epoch:
            shown = ["stage", "trial_id", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
            shown += ["lr", "update_ratio/conv1"]
        else:
            shown = ["stage", "trial_id", "status", "epochs_run", "retries", *spec.search_space]
            shown += ["train_loss", "val_loss", "val_acc", "seconds"]
        with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
            click.echo(frame[[c for c in shown if c in frame]].to_string(index=False))
        click.echo(f"({len(frame)} rows; --out FILE.csv or .parquet exports every column)")
        return
    if out.suffix not in (".csv", ".parquet"):
        raise BabysitterError(f"--out {str(out)!r}: the name must end in .csv or .parquet")
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    click.echo(f"wrote {len(frame)} rows to {out}")


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
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach `tee` and logs at once
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
