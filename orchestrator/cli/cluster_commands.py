"""``babysit submit`` (Ray Jobs, SLURM, KubeRay) and ``babysit jobs``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.app import cli
from orchestrator.cli.options import (
    BUDGET_CHOICE,
    FUSE_OPTION,
    INSECURE_OPTION,
    SKIP_SANITY_OPTION,
    TRACKING_OPTION,
)
from orchestrator.names import BudgetName
from trainables.errors import BabysitterError

if TYPE_CHECKING:
    from orchestrator.cli.request import StudyRequest


@cli.command()
@click.argument("study", metavar="STUDY")
@click.option("--address", help="Ray Jobs: the head's dashboard, e.g. http://10.0.0.5:8265.")
@click.option("--slurm", "where", flag_value="slurm", help="Submit an sbatch job to SLURM.")
@click.option("--kuberay", "where", flag_value="kuberay", help="Apply a KubeRay RayJob.")
@click.option("--dry-run", is_flag=True, help="SLURM, KubeRay: print the file instead.")
@click.option("--follow", is_flag=True, help="Ray Jobs: print the job's log until it ends.")
@INSECURE_OPTION
@click.option("--data", help="Data path as the cluster's nodes see it.")
@click.option("--budget", type=BUDGET_CHOICE, default=str(BudgetName.FULL), show_default=True)
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
@FUSE_OPTION
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
    fuse: str | None,
    skip_sanity: bool,
    **cluster,
) -> None:
    """Run STUDY on a cluster: `babysit run` as a Ray job (--address), in a SLURM job (a Ray
    head on the first node, workers on the others) or in a KubeRay RayJob. Preemption,
    requeue and resubmission resume the study."""
    from orchestrator.cli.request import StudyRequest
    from orchestrator.cluster import submission

    if (address is None) == (where is None):
        raise BabysitterError("babysit submit needs one place: --address URL, --slurm or --kuberay")
    if address is not None:
        from orchestrator.cluster import ray_jobs

        address = ray_jobs.dashboard_address(address, allow_insecure)
    elif not dry_run:
        submission.require("sbatch" if where == "slurm" else "kubectl")
    request = StudyRequest.from_options(
        study=study,
        budget=budget,
        study_dir=study_dir,
        data=data,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        fuse=fuse,
        skip_sanity=skip_sanity,
    )
    gpus = {"slurm": cluster["gpus_per_node"], "kuberay": cluster["gpus_per_worker"]}.get(where, 0)
    if gpus_per_trial is None and gpus > 0 and request.spec.resources.gpus_per_trial == 0:
        request = request.with_resources(gpus_per_trial=0.25)
        click.echo(
            "submit   trials get --gpus-per-trial 0.25 (four per GPU); pass it to change", err=True
        )
    options = {"data": data, "tracking_uri": tracking_uri, **request.flags}
    options["skip_sanity"] = skip_sanity
    if address is not None:
        _submit_ray_job(address, request, options, follow)
    elif where == "slurm":
        _submit_slurm(request, options, dry_run, cluster)
    else:
        _submit_kuberay(request, options, dry_run, cluster)


def _submit_ray_job(address: str, request: StudyRequest, options: dict, follow: bool) -> None:
    from orchestrator.cluster import ray_jobs, submission
    from orchestrator.study import model_files

    study, spec, budget, study_dir = request.study, request.spec, request.budget, request.study_dir

    for flag, path in (("--study-dir", study_dir), ("--data", options["data"])):
        if flag == "--data" and path is None:
            continue
        if path is None or not Path(path).is_absolute():
            raise BabysitterError(
                f"{flag} {path or '(none)'}: a Ray job runs on the cluster, so it needs an "
                "absolute path on storage every node sees (NFS, a shared volume), e.g. "
                f"/shared/{'studies/' + spec.name if flag == '--study-dir' else 'data'}"
            )
    spec_text, files = None, model_files.read_sources(spec)
    if files:  # the spec names the copies the job writes into its study folder
        carried = model_files.relocated(spec, Path(study_dir) / ray_jobs.SUBMITTED)
        spec_text = carried.to_yaml()
    elif Path(study).suffix in (".yaml", ".yml"):
        spec_text = Path(study).read_text()
    args = submission.run_words(str(study_dir), budget, options)
    with ray_jobs.jobs_api(address) as client:
        job = ray_jobs.submit(client, study, str(study_dir), args, spec_text, files)
        click.echo(f"job      {job} submitted to {address}: babysit run {spec.name} in {study_dir}")
        if not follow:
            click.echo(f"follow   babysit jobs logs {job} --address {address} --follow")
            return
        ray_jobs.follow(client, job, click.echo)
        status = str(client.get_job_status(job).value)
    click.echo(f"job      {job} {status}")
    if status != "SUCCEEDED":
        raise BabysitterError(f"job {job} ended {status}; its log is above")


def _submit_slurm(request: StudyRequest, options: dict, dry_run: bool, cluster: dict) -> None:
    from orchestrator.cluster import submission

    study = request.study
    target = Path(study).resolve() if Path(study).is_file() else study
    folder = request.folder().resolve()
    args = submission.run_arguments(str(target), str(folder), request.budget, options)
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


def _submit_kuberay(request: StudyRequest, options: dict, dry_run: bool, cluster: dict) -> None:
    from orchestrator.cluster import submission

    folder, budget = request.folder(root=Path("/studies")), request.budget  # the studies claim
    args = submission.run_arguments(
        f"{submission.SPEC_MOUNT}/spec.yaml", str(folder), budget, options
    )
    manifest = submission.rayjob_manifest(
        request.spec,
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
    from orchestrator.cluster import ray_jobs

    return ray_jobs.jobs_api(ray_jobs.dashboard_address(address, allow_insecure))


@jobs.command("list")
@_jobs_options
def jobs_list(address: str, allow_insecure: bool) -> None:
    """Every job on the cluster, newest last."""
    from orchestrator.cluster.ray_jobs import STUDY_KEY

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
    from orchestrator.cluster import ray_jobs

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
