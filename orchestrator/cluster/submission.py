"""Submitting a study to a cluster: the templates in cluster/ rendered into an sbatch script or
a KubeRay RayJob manifest, and handed to `sbatch` or `kubectl`. The job itself is plain
`babysit run` on a Ray cluster, the same code path as on a laptop."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.study import model_files
from orchestrator.study.spec import StudySpec
from trainables.errors import BabysitterError

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
RAY_VERSION = "2.60.0"
SPEC_MOUNT = "/etc/babysitter"  # where the head's pod finds the spec and the model files
_FIELD = re.compile(r"\{\{(\w+)\}\}")


def template(*parts: str) -> Path:
    path = CLUSTER_DIR.joinpath(*parts)
    if not path.is_file():
        raise BabysitterError(
            f"template {path} is missing: babysit submit reads cluster/ from a babysitter "
            "checkout; install one with `pip install -e .`"
        )
    return path


def render(path: Path, values: Mapping[str, Any]) -> str:
    """Fill the template's ``{{name}}`` fields; every field must get a value."""
    text = path.read_text()
    missing = sorted(set(_FIELD.findall(text)) - set(values))
    if missing:
        raise BabysitterError(f"template {path} has no value for {', '.join(missing)}")
    return _FIELD.sub(lambda m: str(values[m.group(1)]), text)


def run_words(study_dir: str, budget: str, options: Mapping[str, Any]) -> list[str]:
    """``babysit run``'s options for the job: None and False are left out, True is a flag."""
    words = ["--study-dir", study_dir, "--budget", budget]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            words += [flag, str(value)]
    return words


def run_arguments(study: str, study_dir: str, budget: str, options: Mapping[str, Any]) -> str:
    """``babysit run STUDY ...``, shell-quoted, for a job script."""
    return shlex.join([study, *run_words(study_dir, budget, options)])


def slurm_script(
    study: str,
    study_dir: Path,
    run_args: str,
    *,
    nodes: int,
    gpus_per_node: int,
    cpus_per_node: int,
    time: str,
    partition: str | None,
    account: str | None,
) -> str:
    extra = [f"#SBATCH --partition={partition}" if partition else ""]
    extra.append(f"#SBATCH --account={account}" if account else "")
    bin_dir = Path(sys.executable).parent
    return render(
        template("slurm", "babysit.sbatch"),
        {
            "study_name": _job_name(study),
            "nodes": nodes,
            "cpus_per_node": cpus_per_node,
            "gpus_per_node": gpus_per_node,
            "time": time,
            "study_dir": shlex.quote(str(study_dir)),
            "extra_directives": "\n".join(line for line in extra if line) or "#",
            "python": shlex.quote(sys.executable),
            "ray": shlex.quote(str(bin_dir / "ray")),
            "run_arguments": run_args,
        },
    )


def rayjob_manifest(
    spec: StudySpec,
    budget: str,
    run_args: str,
    *,
    image: str,
    workers: int,
    gpus_per_worker: int,
    cpus_per_worker: int,
    memory_per_worker: str,
    studies_claim: str,
    data_claim: str,
) -> str:
    files = model_files.read_sources(spec)  # they travel in the ConfigMap, beside the spec
    spec = model_files.relocated(spec, Path(SPEC_MOUNT))
    return render(
        template("kuberay", "rayjob.yaml"),
        {
            "job_name": _job_name(f"babysit-{spec.name}-{budget}"),
            "study_name": _job_name(spec.name),
            "spec_yaml": _block(spec.to_yaml()),
            "model_files": "".join(f"  {n}: |\n{_block(t)}\n" for n, t in files.items()) or "",
            "entrypoint": shlex.quote(f"python -m orchestrator run {run_args}"),
            "ray_version": RAY_VERSION,
            "image": image,
            "workers": workers,
            "gpus_per_worker": gpus_per_worker,
            "cpus_per_worker": cpus_per_worker,
            "memory_per_worker": memory_per_worker,
            "studies_claim": studies_claim,
            "data_claim": data_claim,
        },
    )


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise BabysitterError(
            f"{tool} is not on PATH: submit from a machine that has it (the cluster's login "
            "node, a configured kubectl), or pass --dry-run to print the file"
        )


def hand_over(command: list[str], stdin: str | None = None) -> str:
    """Run the cluster's own tool (sbatch, kubectl); its first error line if it fails."""
    require(command[0])
    proc = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
        raise BabysitterError(f"{command[0]} refused the job: {reason.splitlines()[0][:300]}")
    return proc.stdout.strip()


def _block(text: str) -> str:
    """``text`` as the body of a YAML block scalar under a ConfigMap key."""
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


def _job_name(text: str) -> str:
    """A Kubernetes / SLURM friendly name: lowercase letters, digits and dashes, <= 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "babysit"
