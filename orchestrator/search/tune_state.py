"""Tune's experiment state in a stage's folder, kept whole. Tune saves it in its driver's
staging folder, then copies it into the stage folder; a driver killed during that copy leaves
a file cut short there (seen: a 0-byte ``experiment_state``, which Tune restored as one trial
with no settings). A copy of each file, taken while it reads back whole, stands in for a
damaged one when the stage is restored."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

KEPT = ".tune-state"  # in the stage folder
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


def keep(stage: Path) -> None:
    """Copy each state file that reads back whole and changed since its last copy."""
    kept = stage / KEPT
    for pattern in PATTERNS:
        for path in stage.glob(pattern):
            copy = kept / path.name
            with contextlib.suppress(OSError):
                if copy.exists() and copy.stat().st_mtime >= path.stat().st_mtime:
                    continue
                if not whole(path):
                    continue
                kept.mkdir(exist_ok=True)
                aside = copy.with_name(f".{copy.name}.tmp")
                shutil.copy2(path, aside)
                os.replace(aside, copy)


def repair(stage: Path) -> list[str]:
    """Before a restore: put the last whole copy in place of each damaged state file, and set
    aside a damaged one without a copy (Tune then starts the stage anew rather than restore
    nonsense). Returns the names repaired or set aside."""
    touched = []
    for pattern in PATTERNS:
        for path in stage.glob(pattern):
            if whole(path):
                continue
            copy = stage / KEPT / path.name
            if copy.exists():
                shutil.copy2(copy, path)
            else:
                path.rename(path.with_name(f"{path.name}.damaged"))
            touched.append(path.name)
    return touched
