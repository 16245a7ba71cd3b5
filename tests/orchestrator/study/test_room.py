"""A full disk, for real: the study folder on a small tmpfs. A study stops in one line when the
disk fills during a stage (its trials cannot write their checkpoints) or is nearly full before
a step; `babysit resume` after space is freed goes on and records everything once."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.observer import StudyObserver
from orchestrator.study.pipeline import Study
from orchestrator.study.room import MIN_FREE_MB, free_mb
from orchestrator.study.spec import parse_spec
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import QUICK, TINY_SPEC, seed_store
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded
from trainables.datasets import load_data
from trainables.errors import BabysitterError


@contextlib.contextmanager
def small_disk(path: Path, mb: int) -> Iterator[Path]:
    """A tmpfs of ``mb`` MB mounted at ``path`` (as root), unmounted at the end."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_kb: int) -> Path:
    """A ballast file that leaves ``leave_kb`` KB free on ``disk``."""
    ballast = disk / "ballast"
    size = int(free_mb(disk) * 2**20) - leave_kb * 2**10
    with open(ballast, "wb") as out:
        out.truncate(0)
        out.write(b"\0" * max(size, 0))  # tmpfs holds what is written, not what is truncated
    return ballast


class FillsTheDisk(StudyObserver):
    """Fills the disk as the coarse stage starts, once."""

    def __init__(self, disk: Path) -> None:
        self.disk, self.ballast = disk, None

    def stage_started(self, run) -> None:
        if self.ballast is None:
            self.ballast = fill(self.disk, leave_kb=512)  # Tune's notes fit, checkpoints not


@pytest.mark.slow
def test_a_disk_that_fills_mid_stage_stops_in_one_line_and_resume_goes_on(
    tmp_path, cache_dir, local_ray, empty_store
):
    with small_disk(tmp_path / "disk", mb=160) as disk:
        folder = StudyFolder(seed_store(disk / "study", empty_store))
        spec = parse_spec(TINY_SPEC + QUICK + "retries: 0\n", "tiny")  # no retry has room
        folder.create(spec, Step.FINAL)
        filler = FillsTheDisk(disk)
        data = load_data(spec.base_config(), cache_dir)
        study = Study(folder, spec, data, RayStageRunner(), [filler], skip_sanity=True)
        with pytest.raises(BabysitterError) as stopped:  # the trials' checkpoints did not fit
            study.run()
        message = str(stopped.value)
        assert message.startswith(f"the disk of the study folder {folder.path} is full")
        assert f"`babysit resume {folder.path}` goes on" in message and "\n" not in message
        assert not (folder.results / "coarse.parquet").exists()  # no table of errored trials

        filler.ballast.unlink()
        options = session.SessionOptions(cache_dir, echo=print, runner=RayStageRunner())
        assert session.resume(folder, options).to_dict()["final"]["status"] == "completed"
        coarse = pd.read_parquet(folder.results / "coarse.parquet")
        assert len(coarse) == coarse["trial_id"].nunique() == 2  # no trial lost, none twice
        assert set(coarse["status"]) == {"completed"} and coarse["lr"].nunique() == 2
        assert_study_recorded(embedded_uri(folder.path), "tiny", folder.path)


@pytest.mark.slow
def test_a_nearly_full_disk_stops_before_a_step_and_resume_goes_on(
    tmp_path, cache_dir, empty_store
):
    from orchestrator.search.local_stage import LocalStageRunner

    with small_disk(tmp_path / "disk", mb=MIN_FREE_MB + 32) as disk:
        folder = StudyFolder(seed_store(disk / "study", empty_store))
        ballast = fill(disk, leave_kb=(MIN_FREE_MB - 8) * 1024)
        options = session.SessionOptions(cache_dir, echo=print, runner=LocalStageRunner())
        spec = parse_spec(TINY_SPEC + QUICK, "tiny")
        with pytest.raises(BabysitterError, match=r"is full \(5\d MB free; a step needs 64 MB\)"):
            session.run_new(spec, folder, Step.FINAL, BudgetName.FULL, options, skip_sanity=True)
        assert not folder.results.exists() or not any(folder.results.iterdir())
        ballast.unlink()
        assert session.resume(folder, options).to_dict()["final"]["status"] == "completed"
        assert_study_recorded(embedded_uri(folder.path), "tiny", folder.path)
