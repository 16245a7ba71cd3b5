"""The study's MLflow record: one experiment per study, a parent run per stage and a child run
per trial.

What is on disk (a stage's tables, the final run folder) is the truth and MLflow is brought up
to date from it: a record missed while the server was away is sent later, and one already
there (found by the step it carries) is never sent twice. Live records during a stage are a
courtesy to whoever watches the UI; a failed one only delays that record.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.search.results import DIVERGED, ERRORED
from orchestrator.tracking.ui_text import (
    NOTE,
    experiment_tags,
    shared_view,
    stage_note,
    status_name,
)
from trainables.errors import BabysitterError
from trainables.metric_names import (
    EPOCH_SECONDS,
    JUDGED,
    MEASURED,
    PER_TRIAL,
    TRIAL_STATUS,
    per_layer_or_fold,
)
from trainables.status import TrialStatus

Echo = Callable[[str], None]
MARKER = "lr"  # reported at every epoch, diverged ones included: its steps are the delivered epochs
TRACKED = tuple(n for n in (*MEASURED, EPOCH_SECONDS, *JUDGED) if n not in PER_TRIAL)
DATA_LOSS = "train_data_loss"  # train_loss includes the L2 penalty; val_loss does not
RETRY_S = 10.0
HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def epoch_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one epoch report (a Tune result or a table row) that MLflow records. A
    value that was not measured (NaN, or validation of a diverged epoch) is left out."""
    diverged = report.get(TRIAL_STATUS) == DIVERGED
    metrics = {}
    for key, value in report.items():
        if key not in TRACKED and not per_layer_or_fold(key):
            continue
        if diverged and key.startswith("val_"):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[key] = float(value)
    if "train_loss" in metrics and "train_penalty" in metrics:  # comparable with val_loss
        metrics[DATA_LOSS] = metrics["train_loss"] - metrics["train_penalty"]
    return metrics


def source_commit() -> str:
    """The git commit of the babysitter code that ran the study (``-dirty`` with local edits)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def delivery_errors() -> tuple[type[BaseException], ...]:
    """What a store that is away or busy raises; anything else is a bug and is not hidden."""
    import requests
    from mlflow.exceptions import MlflowException

    return MlflowException, requests.RequestException, OSError


@dataclass(frozen=True)
class TrackingTarget:
    """Where a study records, small and picklable: Tune keeps the live recorder in its
    experiment state, and a resumed stage reconnects from it."""

    uri: str
    experiment: str
    study_id: str
    artifact_location: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    wait_s: float = 120.0
    searched: tuple[str, ...] = ("lr", "l2")  # the params the runs table shows
    embedded: bool = False  # the study folder's own SQLite store, not a server


def _quiet_mlflow() -> None:
    """Fail fast instead of retrying for minutes (a later record catches up), and keep
    MLflow's INFO lines (store migrations) and run URLs off our output."""
    quiet = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    for key, value in {**HTTP, **quiet}.items():
        os.environ.setdefault(key, value)
    import mlflow  # noqa: F401  (configures its loggers on import; we adjust them after)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(target: TrackingTarget, echo: Echo) -> StudyTracker:
    """Open the store and the study's experiment now, so a wrong or unreachable tracking URI
    stops the study before any trial starts."""
    try:
        return open_tracker(target, echo)
    except Exception as exc:  # MLflow raises many types for a bad URI; all mean the same here
        if target.embedded:
            store = Path(target.uri.removeprefix("sqlite:///"))
            raise BabysitterError(
                f"the study's MLflow store {store} cannot be opened: {_first_line(exc)}; the "
                f"study folder holds every record: `babysit sync {store.parent.parent} "
                "--rebuild` sets the store aside and records the study into a new one"
            ) from None
        raise BabysitterError(
            f"--tracking-uri {target.uri!r}: no usable MLflow tracking store there "
            f"({_first_line(exc)}); start the server or fix the URI (omit it to record in the "
            "study folder)"
        ) from None


def open_tracker(target: TrackingTarget, echo: Echo) -> StudyTracker:
    _quiet_mlflow()
    from mlflow import MlflowClient

    client = MlflowClient(target.uri)
    experiment = client.get_experiment_by_name(target.experiment)
    tags = experiment_tags(target.experiment) | shared_view(target.searched)
    if experiment is None:
        experiment_id = client.create_experiment(
            target.experiment, artifact_location=target.artifact_location, tags=tags
        )
    else:
        experiment_id = experiment.experiment_id
        for key, value in tags.items():  # a store written before these tags existed
            if key not in experiment.tags:
                client.set_experiment_tag(experiment_id, key, value)
    return StudyTracker(target, client, experiment_id, echo)


def experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``uri``, or None."""
    _quiet_mlflow()
    from mlflow import MlflowClient

    experiment = MlflowClient(uri).get_experiment_by_name(name)
    return None if experiment is None else experiment.experiment_id


def _ms(seconds: float | None) -> int | None:
    """Unix seconds as MLflow's milliseconds (None: MLflow's now)."""
    return None if seconds is None or not math.isfinite(seconds) else int(seconds * 1000)


def unreachable(uri: str, exc: BaseException) -> str:
    return (
        f"mlflow   {uri} unreachable ({_first_line(exc)}); training goes on, the records wait "
        "on disk and are sent when it answers"
    )


@dataclass
class StudyTracker:
    target: TrackingTarget
    client: Any
    experiment_id: str
    echo: Echo
    _stage_runs: dict[str, str] = field(default_factory=dict)
    _stage_params: dict[str, set[str]] = field(default_factory=dict)
    _trial_runs: dict[str, dict[str, str]] = field(default_factory=dict)
    _run_params: dict[str, set[str]] = field(default_factory=dict)
    _steps: dict[str, set[int]] = field(default_factory=dict)
    _retry_at: float = 0.0
    delayed: set[str] = field(default_factory=set)

    # live records: never raise, never block the stage for long

    @property
    def online(self) -> bool:
        return time.monotonic() >= self._retry_at

    def live(self, action: Callable[[], None]) -> None:
        if not self.online:
            return
        try:
            action()
        except delivery_errors() as exc:
            self._retry_at = time.monotonic() + RETRY_S
            self.echo(unreachable(self.target.uri, exc))
        except Exception as exc:  # a live record never stops training; the stage's record decides
            self.echo(f"mlflow   a live record failed ({type(exc).__name__}: {_first_line(exc)})")

    # the record itself

    def stage_run(
        self, stage: str, params: Mapping[str, Any] | None = None, started: float | None = None
    ) -> str:
        """The stage's parent run, created on first use (resume finds the same one), starting
        at ``started`` (Unix seconds; default now); ``params`` are added when the run lacks
        them (a trial's live record may have made it first)."""
        if stage not in self._stage_runs:
            found = self._search(stage=stage, kind="stage")
            if found:
                run = found[0]
            else:
                tags = self._tags(stage=stage, kind="stage") | {NOTE: stage_note(stage)}
                run = self.client.create_run(
                    self.experiment_id, tags=tags, run_name=stage, start_time=_ms(started)
                )
            self._stage_runs[stage] = run.info.run_id
            self._stage_params[stage] = set(run.data.params)
        missing = {k: v for k, v in (params or {}).items() if k not in self._stage_params[stage]}
        if missing:
            self._log(self._stage_runs[stage], params=missing)
            self._stage_params[stage] |= set(missing)
        return self._stage_runs[stage]

    def trial_run(
        self,
        stage: str,
        trial_id: str,
        config: Mapping[str, Any],
        name: str,
        started: float | None = None,
    ) -> str:
        runs = self._trial_runs.get(stage)
        if runs is None:
            found = self._search(stage=stage, kind="trial")
            runs = self._trial_runs[stage] = {r.data.tags["trial_id"]: r.info.run_id for r in found}
            self._run_params |= {r.info.run_id: set(r.data.params) for r in found}
        if trial_id not in runs:
            parent = self.stage_run(stage)
            tags = self._tags(
                stage=stage, kind="trial", trial_id=trial_id, status=TrialStatus.RUNNING
            )
            run = self.client.create_run(
                self.experiment_id,
                tags={**tags, "mlflow.parentRunId": parent},
                run_name=name,
                start_time=_ms(started),
            )
            runs[trial_id] = run.info.run_id
            self._steps[run.info.run_id] = set()
            self._run_params[run.info.run_id] = set()
        # params the run lacks: a driver killed between creating it and logging them
        run_id = runs[trial_id]
        missing = {k: v for k, v in config.items() if k not in self._run_params[run_id]}
        if missing:
            self._log(run_id, params=missing)
            self._run_params[run_id] |= set(missing)
        return run_id

    def link(self, run_id: str, text: str) -> str:
        """A Markdown link to a run, for a description (the UI renders it)."""
        return f"[{text}](#/experiments/{self.experiment_id}/runs/{run_id})"

    def log_epochs(self, run_id: str, reports: Iterable[Mapping[str, Any]]) -> int:
        """Send the epochs MLflow does not hold yet; returns how many were sent."""
        if run_id not in self._steps:
            history = self.client.get_metric_history(run_id, MARKER)
            self._steps[run_id] = {m.step for m in history}
        sent = 0
        for report in reports:
            step = int(report["epoch"])
            metrics = epoch_metrics(report)
            if step in self._steps[run_id] or MARKER not in metrics:
                continue
            self._log(run_id, metrics=metrics, step=step)
            self._steps[run_id].add(step)
            sent += 1
        return sent

    def finish_trial(
        self,
        run_id: str,
        status: str,
        epochs_run: int,
        error: str = "",
        flag: str = "",
        ended: float | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """The trial's status tags (and ``extra`` ones), and its run ended at ``ended`` (Unix
        seconds; default now: a live record ends it as the trial ends, the stage's record when
        it last reported)."""
        tags = {"status": status, "epochs_run": str(epochs_run), **(extra or {})}
        if flag:
            tags["flag"] = flag
        if status == TrialStatus.STOPPED:
            tags["stopped_at_epoch"] = str(epochs_run)
        if error:
            tags["error"] = error
        name = self.client.get_run(run_id).info.run_name or ""
        tags["mlflow.runName"] = status_name(name, status, epochs_run)
        self._log(run_id, tags=tags)
        outcome = "FAILED" if status == ERRORED else "FINISHED"
        self.client.set_terminated(run_id, outcome, end_time=_ms(ended))

    def finish_stage(
        self,
        stage: str,
        *,
        metrics: Mapping[str, float] = {},
        tags: Mapping[str, str] = {},
        artifacts: Iterable[Path] = (),
        failed: bool = False,
        ended: float | None = None,
    ) -> None:
        run_id = self.stage_run(stage)
        held = self.client.get_run(run_id).data.metrics
        fresh = {k: v for k, v in metrics.items() if k not in held and math.isfinite(v)}
        self._log(run_id, metrics=fresh, tags=tags)
        for path in artifacts:
            if path.exists():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED", end_time=_ms(ended))

    def drop_stage(self, stage: str) -> None:
        """Delete the stage's run: its step was redone, and the new record replaces it."""
        for run in self._search(stage=stage, kind="stage"):
            self.client.delete_run(run.info.run_id)
        self._stage_runs.pop(stage, None)

    def log_curves(self, run_id: str, curves: Mapping[str, Iterable[float]]) -> None:
        """Each curve as one metric's history (step 0, 1, ...), unless the run holds it."""
        from mlflow.entities import Metric

        held = set(self.client.get_run(run_id).data.metrics)
        now = int(time.time() * 1000)
        batch = [
            Metric(name, value, now, step)
            for name, values in curves.items()
            if name not in held
            for step, value in enumerate(values)
            if math.isfinite(value)
        ]
        for start in range(0, len(batch), 1000):  # MLflow's log_batch takes 1000 metrics
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def _search(self, **tags: str) -> list[Any]:
        wanted = {"study_id": self.target.study_id, **tags}
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in wanted.items())
        return list(self.client.search_runs([self.experiment_id], where, max_results=50000))

    def _tags(self, **tags: str) -> dict[str, str]:
        return {**dict(self.target.tags), "study_id": self.target.study_id, **tags}

    def _log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] = {},
        step: int = 0,
        params: Mapping[str, Any] = {},
        tags: Mapping[str, str] = {},
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()],
        )


def _first_line(exc: BaseException) -> str:
    """The reason, not MLflow's whole retry story: "Connection refused" rather than a
    200-character urllib3 message."""
    text = str(exc).strip() or type(exc).__name__
    for reason in ("Connection refused", "Name or service not known", "timed out"):
        if reason in text:
            return reason
    return text.splitlines()[0][:160]
