"""Search rounds: coarse, then fine rounds narrowed from the last one, each a stage of its own
in the study folder, the console and MLflow; ``rounds: auto`` stops when the best sit inside
the box and the box stopped shrinking."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from orchestrator import session
from orchestrator.names import BudgetName, Step, round_number, round_stage
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.narrowing_decision import decide_narrowing
from orchestrator.study.records import NarrowingRecord
from orchestrator.study.spec import load_spec, parse_spec
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import QUICK, assert_one_line_error, babysit_here
from tests.orchestrator.kills import reports_by_trial, run_until_killed
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded, tree
from trainables.epoch import EpochReport

SPEC = """
name: rounds
trial: {{dataset: faces, data: {data}, batch_size: 32, threads: 1}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: 4, epochs: 2, scheduler: {{type: fifo}}}}
fine: {{trials: 2, epochs: 2, scheduler: {{type: fifo}}}}
narrowing: {{top_k: 2}}
final: {{epochs: 2}}
cv: 2
min_rung_steps: 1
rounds: {rounds}
""" + QUICK.replace("{", "{{").replace("}", "}}")


def test_rounds_are_named_coarse_fine_fine2():
    assert [round_stage(n) for n in (1, 2, 3, 4)] == ["coarse", "fine", "fine2", "fine3"]
    assert [round_number(s) for s in ("coarse", "fine", "fine2", "fine3")] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="not a search stage"):
        round_number("final")


@pytest.mark.slow
def test_three_rounds_each_have_their_stage_narrowing_and_mlflow_parent(
    tiny_faces, cache_dir, study_dir
):
    spec = parse_spec(SPEC.format(data=tiny_faces, rounds=3), "rounds")
    lines: list[str] = []
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=LocalStageRunner())
    folder = StudyFolder(study_dir)
    summary = session.run_new(
        spec, folder, Step.FINAL, BudgetName.FULL, options, skip_sanity=True
    ).to_dict()
    out = "\n".join(lines)
    assert folder.rounds_done() == ["coarse", "fine", "fine2"]
    assert "narrow   coarse -> fine" in out and "narrow   fine -> fine2" in out
    second = folder.read_narrowing("fine2")
    assert (second.source, second.into, second.stop) == ("fine", "fine2", "")
    assert folder.narrowing_file_for("fine2").name == "narrowing-fine2.json"
    fine2 = pd.read_parquet(folder.results / "fine2.parquet")
    low, high = second.fine_space["lr"]["loguniform"]
    assert len(fine2) == 2 and fine2["lr"].between(low, high).all()
    assert (fine2["cv_folds"] == 2).all()
    assert summary["rounds"]["fine2"]["trial_id"] in set(fine2["trial_id"])
    assert summary["final"]["round"] == "fine2"
    assert_study_recorded(embedded_uri(study_dir), "rounds", study_dir)
    stages = tree(embedded_uri(study_dir), "rounds")
    assert len(stages["fine2"][1]) == 2
    assert stages["fine2"][0].data.tags["narrowing.lr"] == second.decisions[0].reason
    assert stages["final"][0].data.tags["chosen_from"] == "fine2"

    shown = babysit_here("results", study_dir, "--stage", "fine2", cache=cache_dir)
    assert shown.returncode == 0 and shown.stdout.count(" fine2 ") == 2
    assert "val_acc_se" in shown.stdout.splitlines()[0]
    assert_one_line_error(
        babysit_here("results", study_dir, "--stage", "fine5", cache=cache_dir),
        "--stage 'fine5'",
        "finished steps: coarse, fine, fine2, final",
    )


def planted(metrics_of):
    """A trainable that reports ``metrics_of(config)`` each epoch without training."""

    def trainable(config, data, *, on_epoch, checkpoint_path=None, resume=False):
        for epoch in range(1, config.epochs + 1):
            status = "completed" if epoch == config.epochs else "running"
            metrics = {"epoch": epoch, "lr": config.lr, **metrics_of(config)}
            on_epoch(EpochReport(epoch, metrics, status))

    return trainable


def healthy(acc: float) -> dict[str, float]:
    return {
        "val_acc": acc,
        "val_acc_se": 0.01,
        "val_loss": 1 - acc,
        "val_loss_initial": 0.69,
        "val_loss_se": 0.01,
        "train_loss": 0.2,
        "train_acc": 0.9,
        "train_penalty": 0.01,
        "chance_acc": 0.5,
    }


@pytest.mark.slow
def test_auto_rounds_stop_when_the_best_sit_inside_and_the_box_stopped_shrinking(
    tiny_faces, cache_dir, study_dir
):
    """Every trial scores the same (planted): narrowing learns nothing after the fine round,
    so no fine2 round runs and the final config comes from the fine round."""
    spec = parse_spec(SPEC.format(data=tiny_faces, rounds="auto"), "rounds")
    lines: list[str] = []
    runner = LocalStageRunner(planted(lambda config: healthy(0.9)))
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=runner)
    folder = StudyFolder(study_dir)
    summary = session.run_new(
        spec, folder, Step.FINAL, BudgetName.FULL, options, skip_sanity=True
    ).to_dict()
    assert folder.rounds_done() == ["coarse", "fine"]
    stop = folder.read_narrowing("fine2").stop
    assert stop.startswith("the best trials sit inside the box and it stopped shrinking")
    assert f"rounds   no fine2 round: {stop}" in "\n".join(lines)
    assert summary["final"]["round"] == "fine"
    assert not folder.needs_search(Step.FINAL, spec)


def _fine_trials(rows):
    return pd.DataFrame(
        [
            {
                "trial_id": f"t{i}",
                "status": "completed",
                "lr": lr,
                "l2": l2,
                "epochs_run": 2,
                **healthy(acc),
            }
            for i, (acc, lr, l2) in enumerate(rows)
        ]
    )


@pytest.mark.parametrize(
    ("rows", "stops"),
    [
        ([(0.9, 1.5e-3, 2e-5), (0.9, 8e-2, 8e-4), (0.9, 1e-2, 1e-4)], True),  # spread: settled
        ([(0.9, 1e-2, 1e-4), (0.9, 1.1e-2, 1.1e-4), (0.5, 1e-3, 1e-5)], False),  # clustered
        ([(0.99, 9.9e-2, 1e-4), (0.8, 1e-2, 1.1e-4), (0.7, 3e-3, 1e-5)], False),  # boundary
    ],
)
def test_the_round_rule_on_planted_fine_results(rows, stops):
    spec = load_spec("faces").with_changes(rounds="auto", narrowing={"top_k": 3})
    space = {
        "lr": {"loguniform": [1e-3, 1e-1]},
        "l2": {"loguniform": [1e-5, 1e-3]},
    }
    from orchestrator.search.space import parse_space

    record = decide_narrowing(spec, _fine_trials(rows), None, "fine", parse_space(space))
    assert bool(record.stop) is stops
    fixed = spec.with_changes(rounds=4)
    assert decide_narrowing(fixed, _fine_trials(rows), None, "fine", parse_space(space)).stop == ""
    assert NarrowingRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_searched_choice_is_narrowed_recorded_and_said_with_its_evidence():
    from orchestrator.console import narrowing_lines
    from orchestrator.search.space import parse_space

    rows = [(0.9, 1e-2, 1e-4), (0.89, 2e-2, 2e-4), (0.88, 3e-2, 1e-4), (0.5, 1e-2, 1e-4)]
    trials = _fine_trials(rows).assign(augment=[True, True, True, False])
    spec = load_spec("faces").with_changes(narrowing={"top_k": 3})
    space = parse_space({"lr": {"loguniform": [1e-3, 1e-1]}, "augment": {"choice": [False, True]}})
    record = decide_narrowing(spec, trials, None, "coarse", space)
    assert record.space()["augment"].values == (True,)
    assert NarrowingRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    (line,) = [x for x in narrowing_lines(record).splitlines() if "augment" in x]
    assert line.startswith("  augment    choice {false, true} -> {true}: true 3 of the top 3;")


@pytest.mark.slow
def test_a_study_killed_mid_round_and_mid_cross_validated_trial_loses_and_repeats_nothing(
    tiny_faces, cache_dir, study_dir, tmp_path
):
    """The driver and its Ray runtime SIGKILLed while round fine2 runs, one of its
    cross-validated trials finished and another half-way: `babysit resume` keeps the finished
    one, continues the other from its checkpoint (no epoch twice) and ends the study."""
    text = SPEC.format(data=tiny_faces, rounds=3)
    text = text.replace("fine: {trials: 2, epochs: 2", "fine: {trials: 4, epochs: 6")
    spec_file = tmp_path / "rounds.yaml"
    spec_file.write_text(text)
    experiment = study_dir / "ray" / "fine2"

    def halfway(finished, reports):
        return [t for t, n in reports.items() if t not in finished and 1 <= n < 6]

    killed, finished, reports = run_until_killed(
        ["run", spec_file, "--study-dir", study_dir, "--skip-sanity"],
        cache_dir,
        experiment,
        lambda finished, reports: bool(finished and halfway(finished, reports)),
    )
    unfinished = halfway(finished, reports)
    before = {t: n for t, n in reports.items() if t in finished}
    assert "narrow   fine -> fine2" in killed and not (study_dir / "results/fine2.parquet").exists()

    proc = babysit_here("resume", study_dir, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "fine2  resuming the interrupted stage" in proc.stdout
    assert "coarse already finished" in proc.stdout and "fine   already finished" in proc.stdout
    after = reports_by_trial(experiment)
    assert len(after) == 4 and all(after[t] == n for t, n in before.items())
    for result in experiment.glob("*/result.json"):  # a resumed trial goes on from a checkpoint
        epochs = [json.loads(line)["epoch"] for line in result.read_text().splitlines()]
        restarts = [b for a, b in itertools.pairwise(epochs) if b <= a]
        assert all(b > 1 for b in restarts), f"{result.parent.name} started again from scratch"
    resumed = [t for t in unfinished if after[t] > reports[t]]
    assert resumed, "the half-way trial did not continue"
    fine2 = pd.read_parquet(study_dir / "results" / "fine2.parquet")
    assert len(fine2) == fine2["trial_id"].nunique() == 4 and (fine2["cv_folds"] == 2).all()
    epochs = pd.read_parquet(study_dir / "results" / "fine2_epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs[["fold0/val_acc", "fold1/val_acc"]].notna().all().all()
    assert_study_recorded(embedded_uri(study_dir), "rounds", study_dir)
