"""One driver per study folder: two `babysit run` / `resume` on one folder would interleave
their trials, tables and MLflow runs. The lock is the operating system's (``flock`` on
STUDY_DIR/.lock), so it dies with its process: a killed driver leaves nothing to clean up."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from trainables.errors import BabysitterError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def study_lock(path: Path) -> Iterator[None]:
    """Hold the study folder's lock, or say in one line who holds it. A folder made only to
    hold the lock (the command stopped before the study began) is removed again."""
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_FILE
    with lock.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BabysitterError(
                f"study folder {str(path)!r} is in use by {holder}; one babysit works on a "
                "study at a time: wait for that one to end or stop it, or give a new study "
                "another --study-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"babysit pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
        try:
            yield
        finally:
            if made and not any(p.name != LOCK_FILE for p in path.iterdir()):
                lock.unlink()
                path.rmdir()
