"""Bring a study's MLflow record up to date with its folder: every finished stage (parent run,
one child per trial, per-epoch metrics, status tags, tables) and the final run (model, test
metrics, confusion matrix, checkpoint). Idempotent, so it runs after every step, on resume and
from `babysit sync`."""

from __future__ import annotations

import csv
import math
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.names import METRIC, TRACKING_WAIT_S, Step
from orchestrator.search.ranking import judge, rank
from orchestrator.search.rungs import COLUMNS as RUNG_COLUMNS
from orchestrator.search.rungs import decision_text
from orchestrator.search.space import Param
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import StudySpec
from orchestrator.tracking.model_export import log_model, served_weights
from orchestrator.tracking.sqlite_store import embedded_uri
from orchestrator.tracking.store import StudyTracker, TrackingTarget, delivery_errors, source_commit
from orchestrator.tracking.ui_text import NOTE, stage_note
from trainables.config import ARCH, TrialConfig, field_names
from trainables.errors import BabysitterError
from trainables.metrics import ClassificationReport
from trainables.status import USABLE

PROBE_CURVE = "probe_loss/lr {}"  # MLflow names allow no "+" or "="


def stage_params(spec: StudySpec, stage: str, space: dict[str, Param]) -> dict[str, Any]:
    settings = spec.stage(stage)
    params: dict[str, Any] = {
        "trials": settings.trials,
        "epochs": settings.epochs,
        "search": settings.search,
        "scheduler": settings.scheduler.type,
    }
    if settings.scheduler.type == "asha":
        params["grace_period"] = settings.scheduler.grace_period
        params["reduction_factor"] = settings.scheduler.reduction_factor
    params.update({f"space.{name}": p.describe() for name, p in space.items()})
    return params


def trial_params(config: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
    """The trial's config, plus ``log10_<name>`` for each parameter searched in log space: the
    UI draws params on linear axes, where 1e-5 .. 1e-1 would sit in one corner."""
    logs = {
        f"log10_{name}": round(math.log10(config[name]), 4)
        for name, param in space.items()
        if param.numeric and param.range().log and _positive(config.get(name))
    }
    return {**config, **logs}


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def trial_name(trial_id: str, values: dict[str, Any], space: dict[str, Param]) -> str:
    """``00003 lr=0.00123 l2=4.5e-05``: a run name that reads well in the UI's run list."""
    settings = [_setting(name, values.get(name)) for name in space]
    return " ".join([trial_id.rsplit("_", 1)[-1], *settings])


def _setting(name: str, value: Any) -> str:
    return f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"


def pending(folder: StudyFolder) -> list[str]:
    """Finished steps whose record has not reached MLflow in full yet."""
    recorded = set(folder.read_state().recorded)
    return [str(s) for s in folder.finished() if s not in recorded]


def record_pending(tracker: StudyTracker, folder: StudyFolder, spec: StudySpec) -> list[str]:
    """Record every finished step not recorded yet; returns the steps still pending (the
    tracking server did not answer)."""
    left = []
    for step in pending(folder):
        try:
            if step == Step.SANITY:
                record_sanity(tracker, folder)
            elif step == Step.FINAL:
                record_final(tracker, folder)
            else:
                record_stage(tracker, folder, spec, step)
        except delivery_errors():
            left.append(step)
            continue
        folder.update_state(recorded=(*folder.read_state().recorded, step))
    return left


def record_stage(tracker: StudyTracker, folder: StudyFolder, spec: StudySpec, stage: str) -> None:
    tables = folder.read_stage(stage)
    if tables is None:
        return
    trials, epochs = tables.trials, tables.epochs
    space = folder.stage_space(spec, stage)
    params = stage_params(spec, stage, space)
    if len(trials) and "epochs" in trials:  # as planned for the data (cv, steps per rung)
        params["epochs"] = int(trials["epochs"].iloc[0])
        params["cv_folds"] = int(trials["cv_folds"].iloc[0]) if "cv_folds" in trials else 0
    tracker.stage_run(stage, params)
    fields = set(field_names())
    flags = dict(zip(trials["trial_id"], judge(trials)["flag"], strict=True))
    for row in trials.to_dict("records"):
        config = {k: v for k, v in row.items() if k in fields or k.startswith(ARCH)}
        mine = epochs[epochs["trial_id"] == row["trial_id"]] if len(epochs) else epochs
        started, ended = _trial_times(row, mine)
        run_id = tracker.trial_run(
            stage,
            row["trial_id"],
            trial_params(config, space),
            trial_name(row["trial_id"], row, space),
            started=started,
        )
        if len(mine):
            tracker.log_epochs(run_id, mine.to_dict("records"))
        tracker.finish_trial(
            run_id,
            row["status"],
            int(row["epochs_run"]),
            row.get("error", ""),
            flags[row["trial_id"]] if row["status"] in USABLE else "",
            ended=ended,
            extra=rung_tags(row),
        )
    best = rank(trials)
    metrics, tags = {}, {}
    if len(best):
        top = best.iloc[0]
        metrics[f"best_{METRIC}"] = float(top[METRIC])
        metrics[f"best_{METRIC}_se"] = float(top["score_se"])
        tags["best_trial_id"] = str(top["trial_id"])
        tags["best_run_id"] = best_run = tracker.trial_run(stage, top["trial_id"], {}, "")
        name = trial_name(top["trial_id"], top.to_dict(), space)
        tags[NOTE] = stage_note(stage) + f"\n\nBest trial: {tracker.link(best_run, name)}."
    tags.update({f"count.{k}": str(v) for k, v in trials["status"].value_counts().items()})
    artifacts = [*folder.stage_files(stage), *folder.figures(stage)]
    narrowing = folder.read_narrowing(stage) if stage != Step.COARSE else None
    if narrowing is not None:
        tags.update({f"narrowing.{d.name}": d.reason for d in narrowing.decisions})
        artifacts.append(folder.narrowing_file_for(stage))
    tracker.finish_stage(stage, metrics=metrics, tags=tags, artifacts=artifacts)


def rung_tags(row: dict[str, Any]) -> dict[str, str]:
    """Why ASHA stopped the trial, as tags: the rung (epoch), its score, the cutoff it faced and
    how many scores it was compared with, and the same in words."""
    text = decision_text(row)
    if not text:
        return {}
    tags = {f"asha.{c.removeprefix('asha_')}": f"{row[c]:.6g}" for c in RUNG_COLUMNS}
    return {**tags, "asha.decision": text}


def _trial_times(row: dict[str, Any], epochs: Any) -> tuple[float | None, float | None]:
    """When the trial started and last reported (Unix seconds), from its epochs' timestamps;
    None for tables written before they were recorded."""
    if "timestamp" not in epochs or not len(epochs):
        return None, None
    ended = float(epochs["timestamp"].max())
    if not math.isfinite(ended):
        return None, None
    seconds = float(row.get("seconds", math.nan))
    return (ended - seconds if math.isfinite(seconds) else None), ended


def record_sanity(tracker: StudyTracker, folder: StudyFolder) -> None:
    """The checks' values as metrics, their verdicts as tags, each probe's loss curve as a
    metric history, sanity.json and the probe plot as artifacts. A rerun of a failed sanity
    replaces the earlier run."""
    record = folder.read_sanity()
    report, settings = record.report, record.settings
    params = {k: settings[k] for k in ("probe_steps", "overfit_examples", "strong_l2", "sample")}
    params["probe_lrs"] = " ".join(f"{lr:.0e}" for lr in settings["probe_lrs"])
    ended = datetime.fromisoformat(record.finished_at).timestamp()
    started = ended - report.seconds
    run_id = tracker.stage_run(Step.SANITY, started=started)
    held = tracker.client.get_run(run_id).data.tags.get("finished_at")
    if held is not None and held != record.finished_at:
        tracker.drop_stage(Step.SANITY)
    run_id = tracker.stage_run(Step.SANITY, params, started=started)
    metrics = {
        f"{check.name}.{key}": float(value)
        for check in report.checks
        for key, value in check.values.items()
    }
    metrics["seconds"] = report.seconds
    curves = {PROBE_CURVE.format(f"{p.lr:.0e}".replace("+", "")): p.losses for p in report.probes}
    tracker.log_curves(run_id, curves)
    tags = {f"check.{c.name}": c.status for c in report.checks}
    tags.update(passed=str(record.passed), finished_at=record.finished_at)
    if record.lr_range:
        tags["lr_range"] = "[{:.0e}, {:.0e}]".format(*record.lr_range)
    tracker.finish_stage(
        Step.SANITY,
        metrics=metrics,
        tags=tags,
        artifacts=[folder.sanity_file, folder.probe_plot],
        failed=not record.passed,
        ended=ended,
    )


def record_final(tracker: StudyTracker, folder: StudyFolder) -> None:
    final = folder.read_final()
    run_id = tracker.stage_run(Step.FINAL, TrialConfig(**final.config).flat())
    tracker.log_epochs(run_id, final.epochs)
    metrics: dict[str, float] = {}
    tags = {"status": final.status}
    artifacts: list[Path] = []
    rounds = folder.rounds_done()
    if rounds:
        tags["chosen_from"] = rounds[-1]
        tags.update(_chosen_trial(tracker, folder, rounds[-1], final.config))
    if folder.candidates_file.exists():
        artifacts.append(folder.candidates_file)
    artifacts += [folder.final / "config.json", folder.final / "checkpoint.pt"]
    artifacts += [*folder.figures(Step.FINAL), folder.report_file]
    if final.reason:
        tags["reason"] = final.reason[:500]
    tags.update(diagnosis_tags(folder.read_diagnosis(Step.FINAL)))
    test = final.test
    with tempfile.TemporaryDirectory() as tmp:
        if test is not None:
            metrics = {"test_accuracy": test.accuracy, "test_loss": test.loss}
            for i, name in enumerate(test.class_names):
                for key in ("precision", "recall", "f1"):
                    metrics[f"test_{key}/{name}"] = getattr(test, key)[i]
            artifacts += [folder.final / "test_metrics.json", *_report_tables(test, Path(tmp))]
            wanted = folder.read_spec().outputs.mlflow_model
            if wanted and not tracker.client.get_run(run_id).data.tags.get("model"):
                classes = len(test.class_names)
                export = served_weights(folder, final.config, classes, Path(tmp))
                tags["model"] = log_model(tracker.target.uri, run_id, export)
        tracker.finish_stage(Step.FINAL, metrics=metrics, tags=tags, artifacts=artifacts)


def diagnosis_tags(findings: list[str] | None) -> dict[str, str]:
    """The report's diagnosis as tags: ``diagnosis`` names the findings (or says none fired),
    ``diagnosis.N`` holds each with its numbers and advice."""
    if findings is None:
        return {}
    kinds = [line.split(": ")[1] for line in findings if line.count(": ") >= 2]
    tags = {"diagnosis": "; ".join(dict.fromkeys(kinds)) or "no warnings"}
    tags.update({f"diagnosis.{i}": line[:5000] for i, line in enumerate(findings, 1)})
    return tags


def _chosen_trial(
    tracker: StudyTracker, folder: StudyFolder, stage: str, config: dict[str, Any]
) -> dict[str, str]:
    """The trial the final config came from (its searched settings match exactly), linked."""
    tables = folder.read_stage(stage)
    space = folder.stage_space(folder.read_spec(), stage)
    trials = tables.trials
    match = trials
    for name in space:
        if name in trials and name in config:
            match = match[match[name] == config[name]]
    if len(match) != 1:
        return {}
    row = match.iloc[0]
    run_id = tracker.trial_run(stage, row["trial_id"], {}, "")
    link = tracker.link(run_id, trial_name(row["trial_id"], row.to_dict(), space))
    return {
        "chosen_trial_id": str(row["trial_id"]),
        "chosen_run_id": run_id,
        NOTE: stage_note(Step.FINAL) + f"\n\nTrained from {stage} trial {link}.",
    }


def _report_tables(test: ClassificationReport, folder: Path) -> list[Path]:
    """confusion_matrix.csv (rows: true class) and per_class.csv, for reading in the UI."""
    names = test.class_names
    confusion, per_class = folder / "confusion_matrix.csv", folder / "per_class.csv"
    with confusion.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, test.confusion, strict=True))
    with per_class.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for i, name in enumerate(names):
            writer.writerow([name, test.precision[i], test.recall[i], test.f1[i], test.support[i]])
    return [confusion, per_class]


def tracking_choice(folder: StudyFolder, uri: str | None) -> str | None:
    """The study's tracking URI (None: the SQLite store in the study folder). A study keeps
    the store it started with, so its runs are never split over two stores."""
    if not folder.exists():
        return uri
    recorded = folder.read_state().tracking_uri
    if uri is not None and uri != (recorded or embedded_uri(folder.path)):
        raise BabysitterError(
            f"--tracking-uri {uri!r} (or MLFLOW_TRACKING_URI): study {str(folder.path)!r} "
            f"records to {recorded or embedded_uri(folder.path)!r}; drop the option, or start "
            "a new study with --study-dir"
        )
    return recorded


def tracking_target(
    folder: StudyFolder,
    spec: StudySpec,
    uri: str | None,
    study_id: str = "",
    wait_s: float = TRACKING_WAIT_S,
) -> TrackingTarget:
    tags = {"spec_hash": spec.digest(), "git_commit": source_commit()}
    tags["mlflow.source.git.commit"] = tags["git_commit"]
    artifacts = None
    if uri is None:
        (folder.path / "mlflow").mkdir(parents=True, exist_ok=True)
        artifacts = (folder.path / "mlflow" / "artifacts").resolve().as_uri()
    return TrackingTarget(
        uri=uri or embedded_uri(folder.path),
        experiment=spec.name,
        study_id=study_id,
        artifact_location=artifacts,
        tags=tuple(tags.items()),
        wait_s=wait_s,
        searched=tuple(spec.search_space),
        embedded=uri is None,
    )
