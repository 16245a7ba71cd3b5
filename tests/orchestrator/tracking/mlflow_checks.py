"""What every test of a tracked study checks in the MLflow store, whichever store it is."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from orchestrator.study.spec import parse_saved_spec
from orchestrator.tracking.store import TRACKED
from trainables.metric_names import UPDATE_RATIO

STATUS_OF = {"completed": "FINISHED", "stopped_by_asha": "FINISHED", "diverged": "FINISHED"}


def tree(uri: str, experiment: str) -> dict[str, list]:
    """Stage name -> [stage run, child runs]."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([found.experiment_id], max_results=5000)
    stages = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("kind") == "stage"}
    assert len(stages) == sum(r.data.tags.get("kind") == "stage" for r in runs), "a stage twice"
    children = {name: [] for name in stages}
    for r in runs:
        if r.data.tags.get("kind") == "trial":
            parent = r.data.tags["mlflow.parentRunId"]
            (name,) = [n for n, s in stages.items() if s.info.run_id == parent]
            children[name].append(r)
    return {name: [stages[name], children[name]] for name in stages}


def assert_stage_recorded(uri: str, experiment: str, study: Path, stage: str) -> None:
    """One child per trial of the Parquet table, its status tag, and every per-epoch metric
    the table holds, each exactly once."""
    client = MlflowClient(uri)
    parent, children = tree(uri, experiment)[stage]
    assert parent.info.status == "FINISHED"
    trials = pd.read_parquet(study / "results" / f"{stage}.parquet").set_index("trial_id")
    epochs = pd.read_parquet(study / "results" / f"{stage}_epochs.parquet")
    by_trial = {r.data.tags["trial_id"]: r for r in children}
    assert len(children) == len(by_trial) == len(trials)
    assert set(by_trial) == set(trials.index)
    for trial_id, run in by_trial.items():
        row = trials.loc[trial_id]
        assert run.data.tags["status"] == row["status"]
        assert run.info.status == STATUS_OF.get(row["status"], "FAILED")
        if row["status"] == "stopped_by_asha":
            assert run.data.tags["stopped_at_epoch"] == str(row["epochs_run"])
            assert run.info.run_name.endswith(f" [stopped at epoch {row['epochs_run']}]")
            if "asha_rung" in row and math.isfinite(row["asha_rung"]):  # why, in numbers
                assert int(run.data.tags["asha.rung"]) == row["epochs_run"] == row["asha_rung"]
                score, cutoff = float(run.data.tags["asha.score"]), row["asha_cutoff"]
                assert score < float(run.data.tags["asha.cutoff"]) and score < cutoff
                assert int(run.data.tags["asha.compared"]) == row["asha_compared"] >= 1
                assert run.data.tags["asha.decision"].startswith("stopped at epoch")
        elif row["status"] in ("diverged", "errored"):
            assert run.info.run_name.endswith(f" [{row['status']}]")
        else:
            assert "[" not in run.info.run_name
        for name in ("lr", "l2"):  # log-searched: also on a log axis, for the UI's charts
            if parent.data.params.get(f"space.{name}", "").startswith("log"):
                logged = float(run.data.params[f"log10_{name}"])
                assert abs(logged - math.log10(row[name])) < 1e-4
        mine = epochs[epochs["trial_id"] == trial_id]
        if "timestamp" in mine and len(mine):  # the run ends when its trial did, not its stage
            assert abs(run.info.end_time / 1000 - mine["timestamp"].max()) < 2
        assert len(client.get_metric_history(run.info.run_id, "lr")) == row["epochs_run"]
        for key in [k for k in mine.columns if k in TRACKED or k.startswith(UPDATE_RATIO)]:
            expected = [
                (int(e), v)
                for e, v in zip(mine["epoch"], mine[key], strict=True)
                if math.isfinite(v)
            ]
            history = client.get_metric_history(run.info.run_id, key)
            got = sorted((m.step, m.value) for m in history)
            assert len(got) == len(expected), f"{trial_id} {key}: {got} vs {expected}"
            assert [s for s, _ in got] == [e for e, _ in expected]
        if "train_penalty" in mine:  # the data loss, comparable with val_loss, on its own
            both = mine[np.isfinite(mine["train_loss"]) & np.isfinite(mine["train_penalty"])]
            data = client.get_metric_history(run.info.run_id, "train_data_loss")
            want = (both["train_loss"] - both["train_penalty"]).tolist()
            assert [round(m.value, 6) for m in sorted(data, key=lambda m: m.step)] == [
                round(v, 6) for v in want
            ]


def assert_sanity_recorded(uri: str, experiment: str, study: Path) -> None:
    """The sanity run: each check's verdict and values, each probe's loss curve, the files."""
    client = MlflowClient(uri)
    run, children = tree(uri, experiment)["sanity"]
    record = json.loads((study / "sanity.json").read_text())
    assert children == []
    assert run.info.status == ("FINISHED" if record["passed"] else "FAILED")
    for check in record["checks"]:
        assert run.data.tags[f"check.{check['name']}"] == check["status"]
        for key, value in check["values"].items():
            if math.isfinite(value):
                assert run.data.metrics[f"{check['name']}.{key}"] == value
    for probe in record["probes"]:
        name = "probe_loss/lr " + f"{probe['lr']:.0e}".replace("+", "")
        history = sorted(
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)
        )
        finite = [(i, v) for i, v in enumerate(probe["losses"]) if math.isfinite(v)]
        assert history == finite
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert files == {"sanity.json", "sanity_lr_probe.png"}
    lasted = (run.info.end_time - run.info.start_time) / 1000
    assert abs(lasted - record["seconds"]) < 1  # how long the checks took, not the record


def assert_study_recorded(uri: str, experiment: str, study: Path) -> None:
    """The whole tree of a finished study: sanity when it ran, a parent run per search round
    (coarse, fine, fine2, ...) and final, nothing left RUNNING."""
    stages = tree(uri, experiment)
    sanity = (study / "sanity.json").exists()
    rounds = {
        p.stem for p in (study / "results").glob("*.parquet") if not p.stem.endswith("_epochs")
    }
    assert {"coarse", "fine"} <= rounds
    assert set(stages) == rounds | {"final"} | ({"sanity"} if sanity else set())
    if sanity:
        assert_sanity_recorded(uri, experiment, study)
    for stage in sorted(rounds):
        assert_stage_recorded(uri, experiment, study, stage)
    final, children = stages["final"]
    assert children == [] and final.info.status == "FINISHED"
    client = MlflowClient(uri)
    history = [
        json.loads(line) for line in (study / "final" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(client.get_metric_history(final.info.run_id, "lr")) == len(history)
    test = json.loads((study / "final" / "test_metrics.json").read_text())
    assert final.data.metrics["test_accuracy"] == test["accuracy"]
    chosen = client.get_run(final.data.tags["chosen_run_id"])  # linked to its trial
    assert chosen.data.tags["trial_id"] == final.data.tags["chosen_trial_id"]
    assert chosen.data.tags["stage"] == final.data.tags["chosen_from"]
    assert f"/runs/{chosen.info.run_id})" in final.data.tags["mlflow.note.content"]
    for stage in rounds:
        parent = stages[stage][0]
        best = parent.data.tags["best_run_id"]
        assert f"/runs/{best})" in parent.data.tags["mlflow.note.content"]
    outputs = parse_saved_spec((study / "spec.yaml").read_text(), "spec.yaml").outputs
    assert final.data.tags.get("model", "").startswith("models:/") == outputs.mlflow_model
    assert (study / "report.html").exists() == outputs.report
    diagnosed = study / "report" / "final" / "diagnosis.txt"
    if diagnosed.exists():  # the report's diagnosis, as tags
        lines = diagnosed.read_text().splitlines()
        assert bool(lines) == (final.data.tags["diagnosis"] != "no warnings")
        assert [final.data.tags[f"diagnosis.{i}"] for i in range(1, len(lines) + 1)] == lines
    artifacts = {a.path for a in client.list_artifacts(final.info.run_id)}
    assert {"confusion_matrix.csv", "per_class.csv", "checkpoint.pt"} <= artifacts
    coarse = {a.path for a in client.list_artifacts(stages["coarse"][0].info.run_id)}
    assert "coarse.parquet" in coarse
