"""Starting Ray: a local runtime on this machine, or a connection to an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from orchestrator.study_spec import Resources
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
    ray.init(
        address=address,
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
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
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
