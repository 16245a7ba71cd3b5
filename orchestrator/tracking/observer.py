"""The MLflow record as a study observer: each finished step is projected from the study folder
into the store (sent late when the server was away), and, while a stage runs, each trial's
epochs are sent live by one background thread, so the stage never waits on the store."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.names import Step
from orchestrator.search.events import TrialInfo
from orchestrator.study.observer import StudyObserver, StudyStarted
from orchestrator.tracking.record import (
    pending,
    record_pending,
    stage_params,
    trial_name,
    trial_params,
)
from orchestrator.tracking.store import (
    RETRY_S,
    StudyTracker,
    delivery_errors,
    open_tracker,
    unreachable,
)
from trainables.status import TrialStatus

if TYPE_CHECKING:
    from orchestrator.search.stage import StageRun
    from orchestrator.study.folder import StudyFolder
    from orchestrator.study.records import Summary
    from orchestrator.study.spec import StudySpec
    from trainables.config import TrialConfig
    from trainables.epoch import EpochReport

Echo = Callable[[str], None]
RETRY_WAIT_S = 5.0
DRAIN_S = 30.0


class MlflowObserver(StudyObserver):
    """With ``figures_follow`` a finished search or final step is recorded once the report has
    saved its figures (``figures_saved``), so that its record carries them, whichever observer
    hears of the step first; should the report stop watching, steps are recorded as they end."""

    def __init__(
        self,
        tracker: StudyTracker,
        folder: StudyFolder,
        spec: StudySpec,
        echo: Echo,
        *,
        figures_follow: bool = False,
    ) -> None:
        self.tracker, self.folder, self.spec, self.echo = tracker, folder, spec, echo
        self.live = LiveTrials(tracker, echo)
        self.figures_follow = figures_follow

    def study_started(self, started: StudyStarted) -> None:
        target = self.tracker.target
        self.echo(f"mlflow   experiment {target.experiment!r} at {target.uri}")
        self.spec = started.spec
        self.record()

    def step_finished(self, step: str) -> None:
        if step == Step.SANITY or not self.figures_follow:
            self.record()

    def figures_saved(self, step: str) -> None:
        self.record()

    def observer_failed(self, observer: str, hook: str, error: Exception) -> None:
        if self.figures_follow and observer == "ReportObserver":
            self.figures_follow = False
            self.record()

    def study_finished(self, summary: Summary) -> None:
        self.record(wait_s=self.tracker.target.wait_s)

    def stage_started(self, run: StageRun) -> None:
        params = stage_params(self.spec, run.name, run.space)
        self.tracker.live(lambda: self.tracker.stage_run(run.name, params))
        self.live.begin(run)

    def trial_started(self, stage: str, trial: TrialInfo) -> None:
        self.live.send(lambda tracker: self.live.run_of(tracker, stage, trial))

    def trial_epoch(self, stage: str, trial: TrialInfo, result: dict[str, Any]) -> None:
        self.live.send(
            lambda tracker: tracker.log_epochs(self.live.run_of(tracker, stage, trial), [result])
        )

    def trial_finished(
        self, stage: str, trial: TrialInfo, status: TrialStatus, epochs: int
    ) -> None:
        self.live.send(
            lambda tracker: tracker.finish_trial(
                self.live.run_of(tracker, stage, trial), status, epochs
            )
        )

    def stage_ended(self, stage: str) -> None:
        self.live.drain()

    def final_epoch(self, config: TrialConfig, report: EpochReport) -> None:
        row = report.row()
        tracker = self.tracker
        tracker.live(
            lambda: tracker.log_epochs(tracker.stage_run(Step.FINAL, config.flat()), [row])
        )

    def record(self, wait_s: float = 0) -> None:
        """Send what MLflow misses; say what waits, and what was sent late."""
        tracker, folder, spec = self.tracker, self.folder, self.spec
        waiting = pending(folder)
        left = record_pending(tracker, folder, spec)
        deadline = time.monotonic() + wait_s
        if left and wait_s > 0:
            self.echo(
                f"mlflow   waiting up to {wait_s:.0f} s for {tracker.target.uri} to record "
                + ", ".join(left)
            )
        missed = tracker.delayed | set(left)
        while left and time.monotonic() < deadline:
            time.sleep(RETRY_WAIT_S)
            left = record_pending(tracker, folder, spec)
        late = [step for step in waiting if step in missed and step not in left]
        if late:
            self.echo(f"mlflow   recorded after the outage: {', '.join(late)}")
        if left:
            self.echo(
                f"mlflow   not recorded yet: {', '.join(left)} ({tracker.target.uri} did not "
                f"answer); the records wait in the study folder: `babysit sync {folder.path}` "
                "sends them"
            )
        tracker.delayed = set(left) | (tracker.delayed - set(late))


class LiveTrials:
    """Live trial records: a queue and one writer thread with its own connection to the store
    (best effort: the stage's record, made from its tables, is what makes it complete)."""

    def __init__(self, tracker: StudyTracker, echo: Echo) -> None:
        self.target, self.echo = tracker.target, echo
        self.stages: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._tracker: StudyTracker | None = None
        self._down_until = 0.0
        self._queue: queue.Queue | None = None
        self._writer: threading.Thread | None = None

    def begin(self, run: StageRun) -> None:
        """The stage's base config and space: what each trial's run is named and logged from."""
        self.stages[run.name] = (run.trial_base().flat(), run.space)

    def run_of(self, tracker: StudyTracker, stage: str, trial: TrialInfo) -> str:
        base, space = self.stages[stage]
        config = {**base, **trial.config}
        name = trial_name(trial.trial_id, config, space)
        return tracker.trial_run(stage, trial.trial_id, trial_params(config, space), name)

    def send(self, action: Callable[[StudyTracker], Any]) -> None:
        if self._queue is None:
            self._queue = queue.Queue()
            self._writer = threading.Thread(
                target=self._write, args=(self._queue,), name="mlflow-writer", daemon=True
            )
            self._writer.start()
        self._queue.put(action)

    def drain(self) -> None:
        """Let the writer finish (what it cannot send in time, the stage's record sends)."""
        if self._writer is not None and self._queue is not None:
            self._queue.put(None)
            self._writer.join(timeout=DRAIN_S)
            self._queue = self._writer = None

    def _write(self, jobs: queue.Queue) -> None:
        while (action := jobs.get()) is not None:
            self._deliver(action)

    def _deliver(self, action: Callable[[StudyTracker], Any]) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            if self._tracker is None:
                self._tracker = open_tracker(self.target, self.echo)
        except delivery_errors() as exc:
            self._down_until = time.monotonic() + RETRY_S
            self.echo(unreachable(self.target.uri, exc))
            return
        tracker = self._tracker
        tracker.live(lambda: action(tracker))
