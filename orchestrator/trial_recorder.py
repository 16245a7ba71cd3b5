"""The live side of tracking: a Tune callback that sends each epoch to the trial's MLflow run
as it is reported, and closes the run when the trial ends. One background thread writes, so
Tune's loop never waits on the store. Best effort: the stage's tables, recorded after the
stage, are what makes the record complete."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ray import tune

from orchestrator.results import ERRORED, trial_status
from orchestrator.search_space import Param
from orchestrator.study_record import trial_name
from orchestrator.tracking import (
    RETRY_S,
    StudyTracker,
    TrackingTarget,
    delivery_errors,
    open_tracker,
    unreachable,
)

DRAIN_S = 30.0


class TrialRecorder(tune.Callback):
    """Tune pickles its callbacks with the experiment, so this one holds only the picklable
    target and reconnects on first use (also after a resume)."""

    def __init__(
        self,
        target: TrackingTarget,
        stage: str,
        base: dict[str, Any],
        space: dict[str, Param],
        echo: Callable[[str], None],
    ) -> None:
        self.target, self.stage, self.base, self.space, self.echo = target, stage, base, space, echo
        self._tracker: StudyTracker | None = None
        self._down_until = 0.0
        self._queue: queue.Queue | None = None
        self._writer: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        live = {"_tracker": None, "_down_until": 0.0, "_queue": None, "_writer": None}
        return {**self.__dict__, **live}

    @property
    def tracker(self) -> StudyTracker:
        if self._tracker is None:
            self._tracker = open_tracker(self.target, self.echo)
        return self._tracker

    def _run(self, trial: Any) -> str:
        config = {**self.base, **trial.config}
        name = trial_name(trial.trial_id, config, self.space)
        return self.tracker.trial_run(self.stage, trial.trial_id, config, name)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._live(lambda: self._run(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._live(lambda: self.tracker.log_epochs(self._run(trial), [result]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status = trial_status("TERMINATED", last, self.base["epochs"])
        epochs = int(last.get("epoch", 0))
        self._live(lambda: self.tracker.finish_trial(self._run(trial), status, epochs))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = (trial.last_result or {}).get("epoch", 0)
        self._live(lambda: self.tracker.finish_trial(self._run(trial), ERRORED, epochs))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Let the writer finish (what it cannot send in time, the stage's record sends)."""
        if self._writer is not None and self._queue is not None:
            self._queue.put(None)
            self._writer.join(timeout=DRAIN_S)
            self._queue = self._writer = None

    def _live(self, action: Callable[[], Any]) -> None:
        if self._queue is None:
            self._queue = queue.Queue()
            self._writer = threading.Thread(
                target=self._write, args=(self._queue,), name="mlflow-writer", daemon=True
            )
            self._writer.start()
        self._queue.put(action)

    def _write(self, jobs: queue.Queue) -> None:
        while (action := jobs.get()) is not None:
            self._send(action)

    def _send(self, action: Callable[[], Any]) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            tracker = self.tracker
        except delivery_errors() as exc:
            self._down_until = time.monotonic() + RETRY_S
            self.echo(unreachable(self.target.uri, exc))
            return
        tracker.live(action)
