"""Room on the study folder's disk. A study that cannot write its records stops in one line,
before a step when the disk is nearly full, or when a step failed on a full disk (a trial's
checkpoint, a table, the MLflow store); `babysit resume` goes on once space is freed."""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path
from typing import NoReturn

from orchestrator.names import STOPPED_MARK
from trainables.errors import BabysitterError

MIN_FREE_MB = 64  # a step's checkpoints, tables and records, with room to spare
DISK_FULL = ("No space left on device", "database or disk is full", "Errno 28")


def free_mb(path: Path) -> float:
    """Free space on the disk that holds ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**20


def disk_full(path: Path) -> BabysitterError:
    return BabysitterError(
        f"the disk of the study folder {path} is full ({free_mb(path):.0f} MB free; a step "
        f"needs {MIN_FREE_MB} MB); free space, then `babysit resume {path}` goes on where the "
        "study stopped"
    )


def check_room(path: Path) -> None:
    """Stop before a step that could not write its records."""
    if free_mb(path) < MIN_FREE_MB:
        raise disk_full(path)


def out_of_room(study: Path, *failures: BaseException | str) -> bool:
    """Whether these failures (exceptions, or trials' error texts) came from a full disk: they
    say so, or the disk of ``study`` is full now (a cut write rarely says why)."""
    return any(map(says_disk_full, failures)) or free_mb(study) < MIN_FREE_MB


def stop_stage(stage: Path, study: Path) -> NoReturn:
    """Stop a stage that ran out of room: no table is written from trials that never had
    their chance, and the stage is marked so that resume runs its errored trials again."""
    with contextlib.suppress(OSError):  # no inode left: resume keeps them errored
        stage.mkdir(parents=True, exist_ok=True)
        (stage / STOPPED_MARK).touch()
    raise disk_full(study)


def says_disk_full(error: BaseException | str) -> bool:
    """Whether a failure (an exception, or a trial's error text) was a full disk."""
    if isinstance(error, BaseException):
        chain: BaseException | None = error
        while chain is not None:
            if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
                return True
            chain = chain.__cause__ or chain.__context__
        error = str(error)
    return any(sign in error for sign in DISK_FULL)
