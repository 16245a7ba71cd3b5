"""A real one-node SLURM for the tests (Debian's slurm-wlm and munge; `scripts/test` installs
them): munged, slurmctld and slurmd started as root from a temporary folder, on 127.0.0.1 and
ports of their own, one partition, no accounting; stopped at the end."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.orchestrator.tracking.test_store import free_port

CONF = """ClusterName=babysit
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def one_node_slurm() -> Iterator[dict[str, str]]:
    """A running SLURM; yields the environment its commands (and babysit submit) need."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        assert shutil.which(tool), f"needs {tool}: apt-get install slurm-wlm munge (scripts/test)"
    assert os.geteuid() == 0, "the one-node SLURM of the tests runs its daemons as root"
    root = Path(tempfile.mkdtemp(prefix="babysitter-slurm-"))
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(
        CONF.format(
            host=socket.gethostname(),
            root=root,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            cpus=os.cpu_count(),
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = ["munged", "--force", "-S", str(root / "munge.socket"), "--key-file", str(key)]
    munge += ["--pid-file", str(root / "munged.pid"), "--log-file", str(root / "munged.log")]
    munge += ["--seed-file", str(root / "munge.seed")]
    subprocess.run(munge, check=True)
    try:
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        _wait_idle(env)
        yield env
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((root / "munged.pid").read_text()), signal.SIGTERM)
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


def _wait_idle(env: dict[str, str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if out.stdout.strip() == "idle":
            return
        assert time.monotonic() < deadline, f"the SLURM node never became idle: {out}"
        time.sleep(1)


def job_state(job: str, env: dict[str, str]) -> str:
    """The job's state as `scontrol show job` says it (no accounting, so no sacct)."""
    out = subprocess.run(
        ["scontrol", "show", "job", job], env=env, capture_output=True, text=True
    ).stdout
    found = re.search(r"JobState=(\w+)", out)
    return found.group(1) if found else "UNKNOWN"


def wait_for_state(job: str, env: dict[str, str], states: set[str], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while (state := job_state(job, env)) not in states:
        assert time.monotonic() < deadline, f"job {job} still {state} after {seconds:.0f} s"
        time.sleep(2)
    return state
