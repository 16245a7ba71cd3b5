"""A study that fails on something other than bad input (its Ray runtime lost, Tune raising, a
bug) ends in one line that says what happened and how to go on; the traceback goes to a file
in the study folder, named in that line. Everything recorded before stays: resume goes on."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from trainables.errors import BabysitterError, Interrupted

RAY_LOST = ("RaySystemError", "RayActorError", "GcsClient", "RpcError", "ObjectLostError")


def interrupted(study: Path) -> Interrupted:
    return Interrupted(f"interrupted; `babysit resume {study}` goes on where the study stopped")


def failed(study: Path, logs: Path, error: BaseException, details: str = "") -> BabysitterError:
    """The one line for ``error``, its traceback (and ``details``) written to a file in
    ``logs``, or left out where that cannot be written: the line still stands."""
    log = logs / f"failure-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(error)) + details)
        where = f"; details in {log}"
    except OSError:
        where = ""
    return BabysitterError(
        f"{what_happened(error)}{where}; `babysit resume {study}` goes on where the study stopped"
    )


def what_happened(error: BaseException) -> str:
    """What failed, in words, with the error's own last line."""
    text = f"{type(error).__name__}: {_last_line(error)}"
    if str(error).startswith("the local Ray runtime"):
        return f"the study's Ray runtime was lost ({error})"
    names = {type(e).__name__ for e in _chain(error)} | {type(error).__module__}
    if "FileNotFoundError" in text and "session_" in text:
        return f"the study's Ray session folder was removed under it ({text})"
    if any(name in text or name in names for name in RAY_LOST):
        return f"the study's Ray runtime was lost ({text})"
    if "TuneError" in names or type(error).__module__.startswith("ray.tune"):
        return f"Ray Tune stopped the stage ({text})"
    return f"the study stopped on an unexpected error ({text})"


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:300]
