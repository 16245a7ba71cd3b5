"""Tune's experiment state cut short in the stage folder (a driver killed while Tune copied it
there): the last whole copy stands in for it, and one without a copy is set aside."""

from __future__ import annotations

import json
import os
import pickle

from orchestrator.search.tune_state import KEPT, keep, repair, whole


def test_a_state_file_cut_short_is_replaced_by_its_last_whole_copy(tmp_path):
    state = tmp_path / "experiment_state-2026-11-24_05-30-09.json"
    state.write_text(json.dumps({"trial_data": [["{}", "{}"]], "runner_data": {}}))
    searcher = tmp_path / "basic-variant-state-2026-11-24_05-30-09.json"
    searcher.write_bytes(pickle.dumps({"iterators": [1, 2, 3]}))
    keep(tmp_path)
    good = state.read_text(), searcher.read_bytes()

    state.write_text("")  # the copy into the stage folder began, and the driver was killed
    searcher.write_bytes(good[1][:-7])
    os.utime(state, (1e10, 1e10))  # newer than the copies, but damaged: never kept
    keep(tmp_path)
    assert not whole(state) and not whole(searcher)
    assert sorted(repair(tmp_path)) == sorted([state.name, searcher.name])
    assert (state.read_text(), searcher.read_bytes()) == good
    assert repair(tmp_path) == []  # whole again


def test_a_damaged_state_without_a_copy_is_set_aside_so_the_stage_starts_anew(tmp_path):
    state = tmp_path / "experiment_state-2026-11-24_05-30-09.json"
    state.write_text('{"trial_data": [["{')
    assert repair(tmp_path) == [state.name]
    assert not state.exists() and state.with_name(f"{state.name}.damaged").exists()
    assert not (tmp_path / KEPT).exists()
