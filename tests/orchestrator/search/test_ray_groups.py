"""Fused stages on a real local Ray runtime: groups as Ray tasks, members judged by the stage's
judge actor, each member an ordinary trial in the tables, the rungs and the checkpoints."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.search.ray_groups import FUSED_MARK
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.search.rungs import read_decisions
from tests.orchestrator.search.test_local_stage import Recorder, fused_stage


class Lines(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def stage_fused(self, stage, line) -> None:
        self.lines.append(line)


@pytest.mark.slow
def test_a_fused_stage_on_ray_is_recorded_as_trials_and_retries_a_failed_group(
    tmp_path, faces_config, faces, local_ray
):
    """Eight trials in groups of four on Ray, one group failing once after its members'
    second epoch: every trial once, with its rungs and its last checkpoint; the failed
    group's members resume from their checkpoints (no epoch twice, none lost)."""
    from trainables.fused_training import train_fused

    run = fused_stage(tmp_path / "fused", faces_config)
    run = type(run)(run.name, run.stage, run.space, run.base, run.resources, 1, run.storage)
    marker = tmp_path / "failed-once"

    def fails_once(configs, data, *, on_epoch, **kwargs):
        def failing(k, report):
            keep = on_epoch(k, report)
            if report.epoch == 2 and k == 0 and not marker.exists():
                marker.touch()
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return keep

        return train_fused(configs, data, on_epoch=failing, **kwargs)

    seen = Lines()
    tables = RayStageRunner(fused=fails_once).run(run, faces, seen)

    (line,) = seen.lines
    assert line.startswith("8 trials fused in ") and line.endswith(" groups of up to 4")
    assert (run.path / FUSED_MARK).exists() and marker.exists()
    trials, epochs = tables.trials, tables.epochs
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped_by_asha", "diverged"}
    assert (trials["retries"] == 1).sum() >= 1
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    last = epochs.groupby("trial_id")["epoch"].max()
    for trial_id, status in zip(trials["trial_id"], trials["status"], strict=True):
        assert (last[trial_id] == 4) == (status == "completed"), (trial_id, status)
        kept = sorted(p.name for p in (run.path / "checkpoints" / trial_id).iterdir())
        if status != "diverged":
            assert kept == [f"epoch-{last[trial_id]}.pt"], (trial_id, kept)
    judged = [(d.trial_id, d.rung) for d in read_decisions(run.path / "asha.jsonl")]
    judged_ids = set(trials[trials["status"] != "diverged"]["trial_id"])
    assert len(judged) == len(set(judged)) and {t for t, _ in judged} >= judged_ids
    started = [t for e, t in seen.seen if e == "started"]
    assert sorted(started) == sorted(trials["trial_id"])  # a retry does not start them again
    # the failed member's epoch 2, reported before the group failed, ran again (none saved it)
    assert [e for e, _ in seen.seen].count("epoch") - len(epochs) in (0, 1)


@pytest.mark.slow
def test_a_stage_asked_to_fuse_that_cannot_says_why_and_runs_on_tune(
    tmp_path, faces_config, faces, local_ray
):
    run = fused_stage(tmp_path / "optuna", faces_config)
    stage = run.stage.model_copy(update={"search": "optuna", "trials": 2, "epochs": 1})
    run = type(run)(run.name, stage, run.space, run.base, run.resources, 0, run.storage)
    seen = Lines()
    tables = RayStageRunner().run(run, faces, seen)
    assert seen.lines == [
        "trains unfused: search: optuna draws each trial from the results before it (random fuses)"
    ]
    assert not (run.path / FUSED_MARK).exists() and len(tables.trials) == 2


FUSED_STUDY = """
name: fusedkill
trial: {{dataset: faces, data: {data}, train_subset: 600, batch_size: 32, threads: 1}}
search_space:
  lr: {{loguniform: [1.0e-3, 0.1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 8, epochs: 8, scheduler: {{grace_period: 2, reduction_factor: 2}}}}
fine: {{trials: 4, epochs: 2}}
final: {{epochs: 2}}
narrowing: {{top_k: 3}}
min_rung_steps: 1
resources: {{fuse: 4}}
"""


@pytest.mark.slow
def test_a_fused_study_killed_mid_stage_resumes_every_member_from_its_checkpoint(
    tmp_path, cache_dir
):
    """The driver and its Ray runtime SIGKILLed while the coarse stage's groups train, one
    member ended and others half-way: `babysit resume` keeps the ended one as it was, resumes
    the others from their own checkpoints (each goes on from the epoch it had saved), judges no
    rung twice, and the study is recorded in MLflow as any study is."""
    from orchestrator.search.epoch_log import read_log
    from orchestrator.tracking.sqlite_store import embedded_uri
    from tests.conftest import FACES, QUICK, babysit_here
    from tests.orchestrator.kills import run_until_killed
    from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded

    spec = tmp_path / "fusedkill.yaml"
    spec.write_text(FUSED_STUDY.format(data=FACES) + QUICK)
    study = tmp_path / "study"
    coarse = study / "ray" / "coarse"

    def halfway(rows, ends):
        return [t for t, r in rows.items() if t not in ends and 2 <= len(r) < 8]

    def ready(_finished, _reports):
        rows, ends = read_log(coarse)
        return bool(ends) and bool(halfway(rows, ends))

    killed, _, _ = run_until_killed(
        ["run", spec, "--study-dir", study, "--skip-sanity"], cache_dir, coarse, ready
    )
    assert "coarse 8 trials fused in 2 groups of up to 4" in killed
    rows, ends = read_log(coarse)
    before = {t: len(rows[t]) for t in ends}
    saved = {t: len(r) for t, r in rows.items() if t not in ends}

    proc = babysit_here("resume", study, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "coarse resuming the interrupted stage" in proc.stdout
    after, _ = read_log(coarse)
    assert {t: len(after[t]) for t in before} == before  # ended members: not run again
    resumed = {t: after[t][n]["epoch"] for t, n in saved.items() if len(after[t]) > n}
    assert resumed, "no half-way member went on"
    for trial, first in resumed.items():  # its saved epoch + 1, or the last one again when
        assert first in (saved[trial], saved[trial] + 1), (trial, first)  # killed unsaved
    table = pd.read_parquet(study / "results" / "coarse.parquet")
    assert len(table) == table["trial_id"].nunique() == 8
    epochs = pd.read_parquet(study / "results" / "coarse_epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    judged = [(d.trial_id, d.rung) for d in read_decisions(coarse / "asha.jsonl")]
    assert len(judged) == len(set(judged))
    assert_study_recorded(embedded_uri(study), "fusedkill", study)


@pytest.mark.slow
def test_the_knee_is_measured_in_a_task_on_a_trials_resources(faces_config, faces, local_ray):
    """What fuse: auto runs for GPU trials, here on a CPU slot: the knee's K and figures."""
    from orchestrator.search.ray_stage import _knee
    from orchestrator.search.stage_spec import Resources

    config = faces_config.replace(batch_size=32, threads=1)
    size, figures = _knee(Resources(cpus_per_trial=1), faces, config, 2)
    assert list(figures) == [1, 2] and all(v > 0 for v in figures.values()) and size in (1, 2)
