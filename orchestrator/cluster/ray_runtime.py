"""Starting Ray: a local runtime on this machine, or a connection to an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestrator.search.stage_spec import Resources
from trainables.errors import BabysitterError

QUIET = {
    # Tune warns when it snapshots often; we ask it to snapshot every step on purpose.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}


WATCH_EVERY_S = 0.2
WATCHED = ("raylet", "gcs_server")  # a local runtime that loses one of these is gone


@contextlib.contextmanager
def ray_runtime(
    address: str | None = None,
    *,
    needed: bool = True,
    log: Path | None = None,
    on_lost: Callable[[str, str], None] | None = None,
) -> Iterator[None]:
    """``address`` None starts a local runtime with every core (or joins ``RAY_ADDRESS``);
    trial output stays in the trials' logs, Ray's own log lines go to ``log``, our own lines
    report progress. A local runtime keeps its session in a temporary folder of its own,
    removed when it stops: another job's cleanup of /tmp/ray (a shared node) cannot reach it.
    When its raylet or GCS dies, Ray's driver would print their logs and exit some 25 s later
    without a word of ours: ``on_lost`` is told what ended (and the end of its log), then
    the process ends (exit 1).
    Nothing starts when not ``needed`` (a finished study only prints its summary)."""
    import ray

    if not needed:
        yield
        return
    if ray.is_initialized():  # this process's own runtime (a test's, a notebook's): reused
        with _ray_logs_to(log):
            yield
        return
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    # A local runtime with token auth on is what we want; Ray's notice about it is noise.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    local = address is None and "RAY_ADDRESS" not in os.environ
    # short: Ray's socket paths in it must stay under 108 characters
    session = tempfile.mkdtemp(prefix="babysit-ray-") if local else None
    try:
        # "local": never join a cluster someone else started on this machine with `ray start`
        ray.init(
            address="local" if local else address,
            log_to_driver=False,
            logging_level=logging.WARNING,
            **({"include_dashboard": False, "_temp_dir": session} if local else {}),
        )
        watch = _watch(session, on_lost) if local and on_lost is not None else threading.Event()
        with _ray_logs_to(log):
            try:
                yield
            finally:
                watch.set()
                ray.shutdown()
    finally:
        if session is not None:
            shutil.rmtree(session, ignore_errors=True)


def _watch(session: str | None, on_lost: Callable[[str, str], None]) -> threading.Event:
    """A thread that watches the local runtime's own processes until the returned event is
    set; when one ends, it tells ``on_lost``, stops the rest of the runtime and ends the
    process (the study's records are made to survive that, as they survive a SIGKILL)."""
    import ray

    node = ray._private.worker._global_node
    processes = [(name, info.process) for name in WATCHED for info in node.all_processes[name]]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_EVERY_S):
            for name, process in processes:
                if process.poll() is None or stop.is_set():
                    continue
                try:
                    on_lost(f"its {name} (pid {process.pid}) ended", _tail(node, name))
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
                    if session is not None:
                        shutil.rmtree(session, ignore_errors=True)
                finally:
                    os._exit(1)

    threading.Thread(target=watch, name="babysit-ray-watch", daemon=True).start()
    return stop


@contextlib.contextmanager
def _ray_logs_to(path: Path | None) -> Iterator[None]:
    """Ray's and Tune's log records (a failed trial's traceback among them) into ``path``
    instead of onto the console, whose lines are the study's."""
    if path is None:
        yield
        return
    logger = logging.getLogger("ray")
    before = list(logger.handlers)
    handler = _FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for old in before:
        logger.removeHandler(old)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        for old in before:
            logger.addHandler(old)


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


def _tail(node: object, name: str, lines: int = 40) -> str:
    """The end of a runtime process's log, to keep beside the failure."""
    path = Path(node.get_logs_dir_path()) / f"{name}.out"  # type: ignore[attr-defined]
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nthe last lines of {path}:\n" + "\n".join(text) + "\n"


class _FileHandler(logging.FileHandler):
    """Makes its file's folder at the first record: a study refused before it began (no
    record logged) leaves no folder behind."""

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()
