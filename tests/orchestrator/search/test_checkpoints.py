"""A finished stage keeps only its best trials' last checkpoints."""

from __future__ import annotations

import os

from orchestrator.search.checkpoints import prune


def test_a_finished_stage_keeps_the_last_epoch_of_its_best_trials_only(tmp_path):
    for trial in ("best", "other"):
        folder = tmp_path / "checkpoints" / trial
        folder.mkdir(parents=True)
        for epoch in (2, 3, 10):
            (folder / f"epoch-{epoch}.pt").write_bytes(b"x" * 100)
        os.link(folder / "epoch-10.pt", folder / "state.pt")
    prune(tmp_path, keep={"best"})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["best"]
    assert [p.name for p in (tmp_path / "checkpoints" / "best").iterdir()] == ["epoch-10.pt"]
    prune(tmp_path / "no-such-stage", keep=set())  # a stage run in process keeps none
