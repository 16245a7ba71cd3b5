"""Starting Ray: a local runtime on this machine, or a connection to an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from orchestrator.study.spec import Resources
from trainables.errors import BabysitterError

QUIET = {
    # Tune warns when it snapshots often; we ask it to snapshot every step on purpose.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}


@contextlib.contextmanager
def ray_runtime(address: str | None = None, *, needed: bool = True) -> Iterator[None]:
    """``address`` None starts a local runtime with every core (or joins ``RAY_ADDRESS``);
    trial output stays in the trials' logs, our own lines report progress. Nothing starts
    when not ``needed`` (a finished study only prints its summary)."""
    import ray

    if not needed or ray.is_initialized():
        yield
        return
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    # A local runtime with token auth on is what we want; Ray's notice about it is noise.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    local = address is None and "RAY_ADDRESS" not in os.environ
    # "local": never join a cluster someone else started on this machine with `ray start`
    ray.init(
        address="local" if local else address,
        log_to_driver=False,
        logging_level=logging.WARNING,
        **({"include_dashboard": False} if local else {}),
    )
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(resources: Resources) -> None:
    """Refuse a per-trial request no node of the cluster can meet: Ray would keep such trials
    pending forever."""
    import ray

    if not ray.is_initialized():
        return
    nodes = [n["Resources"] for n in _alive_nodes()]
    for key, flag, asked in (
        ("CPU", "--cpus-per-trial", resources.cpus_per_trial),
        ("GPU", "--gpus-per-trial", resources.gpus_per_trial),
    ):
        largest = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if asked > largest:
            raise BabysitterError(
                f"{flag} {asked:g} asks for more than the largest Ray node has ({largest:g} "
                f"{key}s); lower {flag} or add bigger nodes"
            )


def check_shared_storage(study_dir: Path) -> int:
    """On a cluster of more than one node, refuse a study folder some node cannot see: Ray
    Tune would write that node's trial checkpoints to its own disk, where resume and the
    final training never find them. Returns how many nodes were asked (0: one node)."""
    import ray

    nodes = [n["NodeID"] for n in _alive_nodes()] if ray.is_initialized() else []
    if len(nodes) < 2:
        return 0
    anchor = study_dir.resolve()
    while not anchor.exists():
        anchor = anchor.parent
    marker = anchor / f".babysitter-shared-{uuid.uuid4().hex}"
    try:
        marker.touch()
    except OSError:
        return 0  # an unwritable folder fails on its own, with its own message
    try:
        problem = shared_storage_problem(study_dir, nodes_not_seeing(marker, nodes), len(nodes))
    finally:
        marker.unlink(missing_ok=True)
    if problem:
        raise BabysitterError(problem)
    return len(nodes)


def shared_storage_problem(study_dir: Path, blind: list[str], nodes: int) -> str | None:
    """The one line that says which nodes cannot see the study folder, or None."""
    if not blind:
        return None
    return (
        f"--study-dir {study_dir}: {len(blind)} of {nodes} Ray nodes cannot see it (node "
        f"{', '.join(n[:12] for n in blind)}); put the study folder on storage every node "
        "mounts at the same path (NFS, a shared volume)"
    )


def nodes_not_seeing(path: Path, nodes: list[str]) -> list[str]:
    """The ``nodes`` (ids) on which ``path`` does not exist, asked on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def exists(name: str) -> bool:
        return os.path.exists(name)

    probes = [
        exists.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            str(path)
        )
        for node in nodes
    ]
    return [
        node for node, seen in zip(nodes, ray.get(probes, timeout=120), strict=True) if not seen
    ]


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]
