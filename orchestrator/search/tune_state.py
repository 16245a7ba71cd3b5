"""Tune's experiment state in a stage's folder, kept whole. Tune saves it in its driver's
staging folder, then copies it into the stage folder; a driver killed during that copy, or a
full disk, leaves a file cut short there (seen: a 0-byte ``experiment_state``, which Tune
restored as one trial with no settings). A snapshot of all the files, taken together while
each reads back whole, stands in for them when one is damaged at a restore."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from trainables.files import write_text

KEPT = ".tune-state"  # in the stage folder
CURRENT = "current"  # in KEPT: the name of the slot that holds the last whole snapshot
PATTERNS = (
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "searcher-state-*.pkl",
    "tuner.pkl",
)


def whole(path: Path) -> bool:
    """Whether a state file reads back: JSON that parses, or a pickle that ends in its STOP
    opcode (one cut short loses its end)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if path.suffix == ".json" and path.name.startswith("experiment_state"):
        try:
            return "trial_data" in json.loads(data)
        except ValueError:
            return False
    return data.endswith(b".")


def _state_files(stage: Path) -> list[Path]:
    return [path for pattern in PATTERNS for path in sorted(stage.glob(pattern))]


def keep(stage: Path) -> None:
    """Copy Tune's state files, all of them together and only while each reads back whole:
    the experiment's trial list and the searcher's count must agree (mixing a newer searcher
    with an older trial list loses the trials created in between). Two slots take turns; the
    small ``current`` file, replaced last, names the snapshot that is whole."""
    files = _state_files(stage)
    kept = stage / KEPT
    try:
        slot = _current_slot(kept)
        newest = max((path.stat().st_mtime for path in files), default=0.0)
        unchanged = (
            slot is not None
            and slot.stat().st_mtime >= newest
            and {p.name for p in slot.iterdir()} == {p.name for p in files}
        )
        if unchanged or not _restorable(files) or not all(whole(path) for path in files):
            return
        _take(kept, files, "b" if slot is not None and slot.name == "a" else "a")
    except OSError:  # a file replaced under us, or a full disk: the last snapshot stands
        return


def _take(kept: Path, files: list[Path], name: str) -> None:
    slot = kept / name
    shutil.rmtree(slot, ignore_errors=True)
    slot.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, slot / path.name)
    if not all(whole(slot / path.name) for path in files):  # Tune rewrote one meanwhile
        return
    newest = max((slot / path.name).stat().st_mtime for path in files)
    os.utime(slot, (newest, newest))
    write_text(kept / CURRENT, name)


def _current_slot(kept: Path) -> Path | None:
    """The slot ``current`` names (only ever written after its snapshot was found whole)."""
    try:
        slot = kept / (kept / CURRENT).read_text().strip()
    except OSError:
        return None
    return slot if slot.is_dir() else None


def _snapshot(stage: Path) -> Path | None:
    """The last snapshot taken together (a folder of whole state files), if any."""
    slot = _current_slot(stage / KEPT)
    if slot is None:
        return None
    files = list(slot.iterdir())
    return slot if _restorable(files) and all(whole(p) for p in files) else None


def _restorable(files: list[Path]) -> bool:
    """Whether these are enough for Tune to restore from: its tuner and a trial list."""
    names = [path.name for path in files]
    return "tuner.pkl" in names and any(n.startswith("experiment_state-") for n in names)


def repair(stage: Path) -> list[str]:
    """Before a restore: when a state file is damaged, put the last snapshot in place of all
    of them (the files set aside as ``.damaged``), or, without one, set them all aside: Tune
    then starts the stage anew rather than restore a trial list its searcher disagrees with.
    Returns the names set aside."""
    files = _state_files(stage)
    if all(whole(path) for path in files):
        return []
    for path in files:
        path.rename(path.with_name(f"{path.name}.damaged"))
    snapshot = _snapshot(stage)
    if snapshot is not None:
        for path in snapshot.iterdir():
            shutil.copy2(path, stage / path.name)
    return [path.name for path in files]
