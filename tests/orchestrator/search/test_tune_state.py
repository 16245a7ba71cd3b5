"""Tune's experiment state cut short in the stage folder (a driver killed while Tune copied it
there, or a full disk): the last snapshot, taken of all the files together, stands in for
them; without one they are all set aside and the stage starts anew."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from ray import tune

from orchestrator.search.tune_state import keep, repair, whole

STAMP = "2026-11-24_05-30-09"


def tune_state(stage: Path, trials: int) -> tuple[Path, Path, Path]:
    """The files Tune keeps for a stage whose searcher has created ``trials`` trials."""
    state = stage / f"experiment_state-{STAMP}.json"
    listed = [[json.dumps({"trial_id": f"t{i}", "config": {"lr": i}}), "{}"] for i in range(trials)]
    state.write_text(json.dumps({"trial_data": listed, "runner_data": {}}))
    searcher = stage / f"basic-variant-state-{STAMP}.json"
    searcher.write_bytes(pickle.dumps({"created": trials}))
    tuner = stage / "tuner.pkl"
    tuner.write_bytes(pickle.dumps({"param_space": {"lr": [0, 1]}}))
    for path in (state, searcher, tuner):
        os.utime(path, (1e9 + trials, 1e9 + trials))
    return state, searcher, tuner


def contents(*paths: Path) -> list[bytes]:
    return [path.read_bytes() for path in paths]


def test_a_state_file_cut_short_is_replaced_by_its_last_whole_copy(tmp_path):
    files = tune_state(tmp_path, trials=2)
    keep(tmp_path)
    good = contents(*files)

    state, searcher, _ = files
    state.write_text("")  # the copy into the stage folder began, and the driver was killed
    searcher.write_bytes(good[1][:-7])
    os.utime(state, (1e10, 1e10))  # newer than the copies, but damaged: never kept
    keep(tmp_path)
    assert not whole(state) and not whole(searcher)
    assert sorted(repair(tmp_path)) == sorted(f.name for f in files)
    assert contents(*files) == good
    assert repair(tmp_path) == []  # whole again
    assert state.with_name(f"{state.name}.damaged").read_text() == ""  # set aside, not lost


def test_the_trial_list_and_the_searcher_come_back_together_never_mixed(tmp_path):
    """The searcher's file whole at 3 trials, the trial list cut short (the disk filled as
    the third trial began): both come back from the snapshot of 2, so the restored searcher
    creates the third trial again instead of believing it exists."""
    keep_two = tune_state(tmp_path, trials=2)
    keep(tmp_path)
    two = contents(*keep_two)
    state, searcher, tuner = tune_state(tmp_path, trials=3)
    state.write_bytes(state.read_bytes()[:40])
    keep(tmp_path)  # not whole: the snapshot of 2 stands
    assert whole(searcher) and not whole(state)

    repair(tmp_path)
    assert contents(state, searcher, tuner) == two
    assert pickle.loads(searcher.read_bytes()) == {"created": 2}
    assert len(json.loads(state.read_text())["trial_data"]) == 2


def test_a_damaged_state_without_a_snapshot_is_set_aside_so_the_stage_starts_anew(tmp_path):
    state, searcher, tuner = tune_state(tmp_path, trials=2)
    state.unlink()
    keep(tmp_path)  # the tuner alone, before Tune wrote a trial list: nothing to restore from
    state, searcher, tuner = tune_state(tmp_path, trials=2)
    state.write_text('{"trial_data": [["{')
    assert tune.Tuner.can_restore(tmp_path)
    assert sorted(repair(tmp_path)) == sorted(p.name for p in (state, searcher, tuner))
    assert not any(p.exists() for p in (state, searcher, tuner))
    assert not tune.Tuner.can_restore(tmp_path)  # what Tune would have restored is aside
