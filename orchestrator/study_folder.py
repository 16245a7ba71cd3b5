"""The study folder: one study's spec, Ray Tune experiments, results, narrowing and final run.
A folder never mixes two specs; what is already in it is never redone."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.study_spec import StudySpec, parse_spec
from trainables.errors import BabysitterError

TARGETS = ("sanity", "coarse", "fine", "final")


@dataclass(frozen=True)
class StudyFolder:
    path: Path

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "study.json"

    @property
    def results(self) -> Path:
        return self.path / "results"

    @property
    def narrowing_file(self) -> Path:
        return self.path / "narrowing.json"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def sanity_file(self) -> Path:
        return self.path / "sanity.json"

    @property
    def probe_plot(self) -> Path:
        return self.path / "sanity_lr_probe.png"

    def read_sanity(self) -> dict[str, Any] | None:
        if not self.sanity_file.exists():
            return None
        return json.loads(self.sanity_file.read_text())

    def resolve(self, spec: StudySpec) -> StudySpec:
        """``spec`` with ``lr: auto`` replaced by the range this study's lr probe proposed
        (unchanged while there is none)."""
        sanity = self.read_sanity()
        if not spec.lr_auto or sanity is None or not sanity["lr_range"]:
            return spec
        return spec.with_lr_range(*sanity["lr_range"])

    def exists(self) -> bool:
        return self.spec_file.exists()

    def needs_search(self, target: str) -> bool:
        """Whether a search stage up to ``target`` is still to run (and so needs Ray)."""
        if target == "sanity":
            return False
        stages = ["coarse"] if target == "coarse" else ["coarse", "fine"]
        return any(not (self.results / f"{s}.parquet").exists() for s in stages)

    def read_spec(self) -> StudySpec:
        if not self.exists():
            raise BabysitterError(
                f"STUDY_DIR {str(self.path)!r} holds no study (no spec.yaml); start one with "
                "`babysit run STUDY --study-dir DIR`"
            )
        return parse_spec(self.spec_file.read_text(), str(self.spec_file))

    def read_target(self) -> str:
        return self.read_state().get("target", "final")

    def read_state(self) -> dict[str, Any]:
        """study.json: the target, the study id MLflow runs carry, the tracking URI and the
        steps already recorded there."""
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text())

    def write_state(self, **changes: Any) -> dict[str, Any]:
        state = {**self.read_state(), **changes}
        tmp = self.state_file.with_name(".study.json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)
        return state

    def study_id(self) -> str:
        """A stable id for this study's runs, so that studies of one spec sharing a tracking
        server never mix; made on first use for folders older than it."""
        state = self.read_state()
        if "study_id" not in state:
            state = self.write_state(study_id=uuid.uuid4().hex[:12])
        return state["study_id"]

    def create(self, spec: StudySpec, target: str) -> None:
        """Write the spec, or check that the folder's study is this one: a study folder
        never mixes two specs."""
        if self.exists():
            saved = self.read_spec()
            differs = _first_difference(_comparable(saved), _comparable(spec))
            if differs is not None:
                key, old, new = differs
                raise BabysitterError(
                    f"study folder {str(self.path)!r} holds a study with {key}={old!r}, now "
                    f"{key}={new!r}; resume it with `babysit resume {self.path}` or pass another "
                    "--study-dir"
                )
            if TARGETS.index(target) <= TARGETS.index(self.read_target()):
                return
        self.path.mkdir(parents=True, exist_ok=True)
        self.spec_file.write_text(spec.to_yaml())
        self.write_state(target=target)


def _comparable(spec: StudySpec) -> dict[str, Any]:
    """The spec's fields that define the study's results (resources only change its speed)."""
    return _flatten({k: v for k, v in spec.model_dump().items() if k != "resources"})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "search_space":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any] | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return key, old.get(key), new.get(key)
    return None
