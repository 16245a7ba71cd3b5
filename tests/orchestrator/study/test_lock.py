"""One driver per study folder: a second `babysit run` / `resume` / `sync` on a folder in use
is refused in one line, and a driver killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.study.lock import LOCK_FILE, study_lock
from tests.conftest import FACES, assert_one_line_error, babysit_here
from trainables.errors import BabysitterError

HOLD = """
import sys, time
from pathlib import Path
from orchestrator.study.lock import study_lock
with study_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def hold(path: Path) -> subprocess.Popen:
    """Another driver: a process that holds the folder's lock until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    return holder


def test_a_second_driver_is_refused_in_one_line_and_writes_nothing(tmp_path, cache_dir):
    study = tmp_path / "study"
    holder = hold(study)
    try:
        args = ["run", "faces", "--data", FACES, "--budget", "smoke", "--study-dir", study]
        second = babysit_here(*args, cache=cache_dir)
        assert_one_line_error(
            second,
            f"study folder '{study}' is in use by babysit pid {holder.pid} on",
            "--study-dir",
        )
        assert "data " not in second.stdout  # refused before any data is decoded
        assert sorted(p.name for p in study.iterdir()) == [LOCK_FILE]  # no spec, no tables
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with study_lock(study):  # the killed driver's lock went with it
        pass


def test_resume_and_sync_wait_for_the_driver_of_a_study(finished_study, tmp_path, cache_dir):
    study = tmp_path / "copy"
    shutil.copytree(finished_study[0], study)
    before = sorted(p.name for p in study.rglob("*"))
    holder = hold(study)
    try:
        for command in ("resume", "sync"):
            assert_one_line_error(babysit_here(command, study, cache=cache_dir), "is in use by")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in study.rglob("*")) == before
    synced = babysit_here("sync", study, cache=cache_dir)
    assert synced.returncode == 0 and "up to date" in synced.stdout


def test_the_lock_holds_within_one_process_and_a_folder_made_for_it_is_removed(tmp_path):
    study = tmp_path / "fresh"
    with study_lock(study):
        assert (study / LOCK_FILE).read_text().startswith("babysit pid ")
        with pytest.raises(BabysitterError, match="is in use by babysit pid"), study_lock(study):
            pass
    assert not study.exists()  # nothing began in it
    kept = tmp_path / "kept"
    with study_lock(kept):
        (kept / "spec.yaml").write_text("name: x\n")
    assert (kept / "spec.yaml").exists()
