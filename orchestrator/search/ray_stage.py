"""The stage runner on Ray Tune: the trainable, the searcher, the ASHA scheduler and the storage,
started fresh or restored from the stage's own folder after an interruption."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator.names import METRIC, MODE, STOPPED_MARK
from orchestrator.search.checkpoints import CHECKPOINTS
from orchestrator.search.epoch_log import append_epoch, read_log, settled
from orchestrator.search.events import StageEvents, TrialInfo
from orchestrator.search.groups import Fusion, plan_fusion, stage_trials
from orchestrator.search.ray_groups import RayGroups, began_fused, mark_fused
from orchestrator.search.ray_trainable import run_trial
from orchestrator.search.results import (
    DIVERGED,
    ERRORED,
    ROW_COLUMNS,
    STOPPED,
    StageTables,
    TrialRecord,
    history_frame,
    stage_tables,
    trial_status,
)
from orchestrator.search.rungs import DECISIONS_FILE, RungDecision, Rungs, rungs_of
from orchestrator.search.stage import StageRun, Tally
from orchestrator.search.stage_spec import Resources, Scheduler
from orchestrator.search.tune_state import keep, repair
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.errors import BabysitterError
from trainables.fused_training import train_fused
from trainables.metric_names import TRIAL_STATUS

# The observers of the stage running in this process, by stage name: Tune pickles its
# callbacks with the experiment, so the callback holds only the name, and a restored stage
# reports to whoever watches the process that resumed it.
_LISTENERS: dict[str, StageEvents] = {}
KEEP_EVERY_S = 1.0  # how often a whole copy of Tune's experiment state is taken


class RayStageRunner:
    """``ray.init`` is the caller's: a local runtime or a cluster. A stage whose trials fuse
    (``resources.fuse``) trains in groups (``ray_groups.py``); the others run on Tune."""

    def __init__(
        self, trainable: Callable[..., None] = run_trial, fused: Callable = train_fused
    ) -> None:
        self.trainable, self.fused = trainable, fused

    def run(self, run: StageRun, data: DataSplits, events: StageEvents) -> StageTables:
        fusion = _fusion(run, data, events)
        if fusion.size > 1:
            return RayGroups(self.fused).run(run, data, events, fusion.size)
        return self._tune(run, data, events)

    def _tune(self, run: StageRun, data: DataSplits, events: StageEvents) -> StageTables:
        # Save Tune's experiment state every step, so a killed driver loses no finished trial.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
        # A result without the metric is the trial's problem (no score), not the stage's.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        base = run.trial_base()
        wrapped = tune.with_resources(
            tune.with_parameters(
                self.trainable, base=base, data=data, checkpoints=run.path / CHECKPOINTS
            ),
            {"cpu": run.resources.cpus_per_trial, "gpu": run.resources.gpus_per_trial},
        )
        _LISTENERS[run.name] = events
        try:
            if run.path.exists():
                repair(run.path)
            if tune.Tuner.can_restore(run.path):
                events.stage_resumed(run.name, run.path)
                tuner = _restored_tuner(run, wrapped)
            else:  # a stage begun anew: trials from an unrestorable start are not its own
                shutil.rmtree(run.path / CHECKPOINTS, ignore_errors=True)
                callback = TuneEvents(run.name, run.stage.epochs, run.trial_count)
                tuner = _new_tuner(run, wrapped, callback)
            _fit(tuner)
            (run.path / STOPPED_MARK).unlink(missing_ok=True)
        finally:
            _LISTENERS.pop(run.name, None)
            events.stage_ended(run.name)
        trials = tune.ExperimentAnalysis(str(run.path)).trials
        stops = rungs_of(run.stage, run.path / DECISIONS_FILE).stopping()
        rows = read_log(run.path)[0]
        records = [
            _record(t, rows.get(t.trial_id, []), run.stage.epochs, stops.get(t.trial_id))
            for t in trials
        ]
        return stage_tables(run.name, records, base.flat())


def _fusion(run: StageRun, data: DataSplits, events: StageEvents) -> Fusion:
    """How the stage trains: as it began, when it began; else as ``resources.fuse`` says."""
    began = began_fused(run.path)
    if began is not None:
        return began
    if run.path.exists() and tune.Tuner.can_restore(run.path):
        return Fusion(1)
    base = run.trial_base()
    configs = [base.replace(**t.config) for t in stage_trials(run, [])]
    fusion = plan_fusion(run, configs, functools.partial(_knee, run.resources, data))
    if fusion.line:
        events.stage_fused(run.name, fusion.line)
    if fusion.size > 1:
        mark_fused(run.path, fusion)
    return fusion


def _knee(
    resources: Resources, data: DataSplits, config: TrialConfig, most: int
) -> tuple[int, dict[int, float]]:
    """``fused_knee.knee`` on a trial's resources (a GPU of the cluster's, not the driver's)."""
    from trainables.fused_knee import knee

    task = ray.remote(knee).options(
        num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial
    )
    return ray.get(task.remote(config, data, most))


def _fit(tuner: tune.Tuner) -> None:
    """``tuner.fit()``, a Ctrl-C raised as KeyboardInterrupt once Tune has saved its state.
    Tune ends ``fit`` normally on SIGINT; its handler puts back the one it found, which is
    how we tell (a second Ctrl-C then interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        tuner.fit()
        return
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _second_interrupt)
    try:
        tuner.fit()
    finally:
        interrupted = signal.getsignal(signal.SIGINT) is _second_interrupt
        signal.signal(signal.SIGINT, before)
    if interrupted:
        raise KeyboardInterrupt


def _second_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _restored_tuner(run: StageRun, trainable: Any) -> tune.Tuner:
    try:
        again = _ran_out_of_room(run)
        return tune.Tuner.restore(str(run.path), trainable=trainable, resume_errored=again)
    except (ImportError, AttributeError) as exc:  # pickled by a babysitter of other modules
        raise BabysitterError(
            f"the interrupted {run.name} stage in {run.path} was saved by another babysitter "
            f"version and cannot be restored ({type(exc).__name__}: {exc}); delete that folder "
            "to run the stage again (its finished trials are lost), or finish it with that version"
        ) from None


def _ran_out_of_room(run: StageRun) -> bool:
    """Whether the stage stopped on a full disk: then its errored trials run again (from
    their checkpoints), since they never had their chance."""
    return (run.path / STOPPED_MARK).exists()


def _new_tuner(run: StageRun, trainable: Any, callback: tune.Callback) -> tune.Tuner:
    optuna = run.stage.search == "optuna"  # a Searcher; the variant generator limits itself
    return tune.Tuner(
        trainable,
        param_space={name: p.to_tune() for name, p in run.space.items()},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            num_samples=run.stage.trials,
            search_alg=_searcher(run),
            scheduler=_scheduler(run),
            max_concurrent_trials=run.resources.max_concurrent if optuna else None,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run.name,
            storage_path=str(run.storage.resolve()),
            failure_config=tune.FailureConfig(max_failures=run.retries),
            callbacks=[callback],
            verbose=0,
        ),
    )


class TuneEvents(tune.Callback):
    """Tune's trial events as the study's observer hooks."""

    def __init__(self, stage: str, epochs: int, total: int) -> None:
        self.stage, self.epochs, self.total = stage, epochs, total
        self.setup()

    def setup(self, **info: Any) -> None:
        self.start = time.monotonic()
        self.tally = Tally(self.total)
        self.kept = 0.0

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if trials:
            keep(_stage_folder(trials[0]))

    @property
    def events(self) -> StageEvents:
        return _LISTENERS.get(self.stage) or StageEvents()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.trial_started(self.stage, _info(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        append_epoch(_stage_folder(trial), trial.trial_id, result, ROW_COLUMNS)
        self.events.trial_epoch(self.stage, _info(trial), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status = trial_status("TERMINATED", last, self.epochs)
        self.events.trial_finished(self.stage, _info(trial), status, int(last.get("epoch", 0)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("epoch", 0))
        self.events.trial_finished(self.stage, _info(trial), ERRORED, epochs)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        statuses = [trial_status(t.status, t.last_result or {}, self.epochs) for t in trials]
        scores = [
            t.last_result[METRIC]
            for t in trials
            if METRIC in (t.last_result or {}) and t.last_result.get(TRIAL_STATUS) != DIVERGED
        ]
        tally = self.tally.update(statuses, scores, time.monotonic() - self.start)
        if tally is not None:
            self.events.stage_progress(self.stage, tally)
        if trials and time.monotonic() - self.kept > KEEP_EVERY_S:
            keep(_stage_folder(trials[0]))
            self.kept = time.monotonic()


def _stage_folder(trial: Any) -> Path:
    """The stage's folder in the study (Tune's local_experiment_path is its driver's staging
    folder, which Tune copies there)."""
    return Path(trial.path).parent


def _info(trial: Any) -> TrialInfo:
    return TrialInfo(trial.trial_id, dict(trial.config))


def _record(
    trial: Any, rows: list[dict], epochs: int, stopped_at: RungDecision | None
) -> TrialRecord:
    history = history_frame(settled(rows or _tune_rows(trial)))
    last = history.iloc[-1].to_dict() if len(history) else {}
    status = trial_status(trial.status, last, epochs)
    error = _first_line(trial) if status == ERRORED else ""
    failures = int(trial.run_metadata.num_failures)
    retries = failures - 1 if status == ERRORED and failures else failures  # the last one ended it
    stopped_at = stopped_at if status == STOPPED else None
    return TrialRecord(
        trial.trial_id, status, dict(trial.config), history, retries, error, stopped_at
    )


def _tune_rows(trial: Any) -> list[dict]:
    """Tune's own record of a trial: for a stage that an earlier babysitter began, whose
    driver kept no epoch log."""
    path = Path(trial.path) / "result.json"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def _first_line(trial: Any) -> str:
    error = trial.get_error()
    text = str(error) if error is not None else "failed"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("Traceback", "File "))]
    return (informative[-1] if informative else text)[:200]


def _searcher(run: StageRun) -> Any:
    if run.stage.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=run.seed)
    # Tune ignores max_concurrent_trials for a variant generator: it takes its own limit
    return BasicVariantGenerator(
        random_state=run.seed, max_concurrent=run.resources.max_concurrent or 0
    )


def _scheduler(run: StageRun) -> Any:
    if run.stage.scheduler.type == "fifo":
        return FIFOScheduler()
    return RungScheduler(run.stage.scheduler, run.stage.epochs)


class RungScheduler(FIFOScheduler):
    """ASHA on Tune, through the same ``Rungs`` as the in-process runner: Ray's rule, with each
    decision appended to the log in the study's stage folder, from which a restored stage
    (whose scheduler Tune rebuilds empty) reads its rungs back. Not Tune's staging folder:
    that one lives in the Ray session, and a resumed study has a new session."""

    def __init__(self, scheduler: Scheduler, epochs: int) -> None:
        super().__init__()
        self.scheduler, self.epochs = scheduler, epochs
        self.rungs: Rungs | None = None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if "epoch" not in result or METRIC not in result:
            return TrialScheduler.CONTINUE
        if result["epoch"] >= self.epochs:
            return TrialScheduler.STOP
        if self.rungs is None:  # the study's stage folder as it is now (it may have moved)
            log = _stage_folder(trial) / DECISIONS_FILE
            scheduler = self.scheduler
            self.rungs = Rungs.asha(
                scheduler.grace_period, scheduler.reduction_factor, self.epochs, log
            )
        group = self.scheduler.group(trial.config)
        decision = self.rungs.decide(trial.trial_id, int(result["epoch"]), result[METRIC], group)
        stop = decision is not None and decision.stopped
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE
