"""A user's network file travels with its study: the study folder keeps a copy in ``code/`` and
the saved spec names the copy, so that every node that sees the folder (a cluster's shared
storage) builds the same network, and a resumed study builds the one it started with, whatever
became of the original. A submission carries the files to where the job's driver can copy them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.study.spec import StudySpec
from trainables.config import is_file_reference
from trainables.errors import BabysitterError

MAX_BYTES = 256_000  # a network's source, not its weights or data


def user_files(spec: StudySpec) -> dict[str, Path]:
    """Each user file the spec's models name (its trial's and its searched ones), by the name
    its copy takes: the file's own name, or name-HASH.py where two files share one."""
    paths = sorted({_path(ref) for ref in _references(spec)})
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.name] = counts.get(path.name, 0) + 1
    return {_copy_name(path, counts[path.name] > 1): path for path in paths}


def relocated(spec: StudySpec, directory: Path) -> StudySpec:
    """``spec`` with each user file named as its copy in ``directory``."""
    names = {path: name for name, path in user_files(spec).items()}
    return _rewritten(spec, lambda ref: f"{directory / names[_path(ref)]}:{_factory(ref)}")


def read_sources(spec: StudySpec) -> dict[str, str]:
    """The text of each user file, by its copy's name, for a job that runs elsewhere."""
    sources = {}
    for name, path in user_files(spec).items():
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise BabysitterError(
                f"model file {str(path)!r} is {size:,} bytes; a submission carries at most "
                f"{MAX_BYTES:,}: keep weights and data out of it, or install the model as a "
                "package on the cluster (model: package.module:factory)"
            )
        sources[name] = path.read_text()
    return sources


def keep_copies(files: dict[str, Path], directory: Path) -> None:
    """Copy each file into ``directory``; a copy already there must be the same file: a study
    folder never mixes two versions of a network."""
    for name, source in files.items():
        copy = directory / name
        if copy.resolve() == source.resolve():
            continue
        text = source.read_bytes()
        if copy.exists() and copy.read_bytes() != text:
            raise BabysitterError(
                f"study folder {str(directory.parent)!r} trains the model file {name} as it was "
                f"when the study started, and {str(source)!r} has changed since; resume it with "
                f"`babysit resume {directory.parent}`, or pass another --study-dir"
            )
        if not copy.exists():
            directory.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(text)


def _references(spec: StudySpec) -> list[str]:
    searched = spec.search_space.get("model")
    values = next(iter(searched.values()), []) if isinstance(searched, dict) else []
    return [ref for ref in [spec.trial.get("model"), *values] if is_file_reference(ref)]


def _rewritten(spec: StudySpec, rename: Callable[[str], str]) -> StudySpec:
    def new(ref: Any) -> Any:
        return rename(ref) if is_file_reference(ref) else ref

    trial, space = dict(spec.trial), dict(spec.search_space)
    if "model" in trial:
        trial["model"] = new(trial["model"])
    if isinstance(space.get("model"), dict):
        space["model"] = {k: [new(v) for v in vs] for k, vs in space["model"].items()}
    return spec.model_copy(update={"trial": trial, "search_space": space})


def _path(ref: str) -> Path:
    return Path(ref.rpartition(":")[0]).expanduser().absolute()


def _factory(ref: str) -> str:
    return ref.rpartition(":")[2]


def _copy_name(path: Path, shared: bool) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "model"
    if shared:
        stem += "-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return stem + ".py"
