"""The start-up every study command shares, written once: the tracking store checked before any
data is decoded, the data, Ray (a local runtime or a cluster) when a search stage is to run,
the study folder, the observers (console, MLflow), then the study itself."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.console import ConsoleObserver
from orchestrator.failure import failed, interrupted
from orchestrator.names import TRACKING_WAIT_S, BudgetName, Step
from orchestrator.search.stage import StageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.lock import study_lock
from orchestrator.study.model_files import relocated, user_files
from orchestrator.study.observer import StudyObserver
from orchestrator.study.pipeline import Study
from orchestrator.study.records import Summary
from orchestrator.study.room import disk_full, out_of_room
from orchestrator.study.spec import StudySpec
from trainables.datasets import DataSplits, load_data
from trainables.errors import BabysitterError
from trainables.trial_state import check_model

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SessionOptions:
    """Where and how a study runs; none of it changes its results."""

    cache_dir: Path
    address: str | None = None
    tracking_uri: str | None = None
    tracking_wait: float = TRACKING_WAIT_S
    echo: Echo = print
    runner: StageRunner | None = field(default=None, compare=False)  # default: Ray Tune


def run_new(
    spec: StudySpec,
    folder: StudyFolder,
    target: Step,
    budget: BudgetName,
    options: SessionOptions,
    *,
    skip_sanity: bool = False,
) -> Summary:
    """Start a study in ``folder``, or continue the one there (same spec), up to ``target``."""
    if skip_sanity and spec.lr_auto and folder.read_sanity() is None:
        raise BabysitterError(
            "--skip-sanity: the spec says search_space.lr: auto, whose range comes from the "
            "sanity checks' lr probe; drop --skip-sanity, or give lr a range"
        )
    if target == Step.FINE and not folder.stage_done(Step.COARSE):
        raise BabysitterError(
            f"the fine stage narrows the coarse stage's results, and {str(folder.path)!r} has "
            f"none; run `babysit search {spec.name} --stage coarse` first"
        )

    def prepare(scaled: StudySpec) -> StudySpec:
        files = user_files(scaled)
        scaled = relocated(scaled, folder.code.absolute())
        folder.create(scaled, target, files)
        if target != Step.SANITY:
            folder.update_state(skip_sanity=skip_sanity)
        return scaled

    with study_lock(folder.path):  # before anything is written: another driver may be working
        return _run(folder, spec, budget, target, options, skip_sanity, prepare)


def resume(folder: StudyFolder, options: SessionOptions) -> Summary:
    """Continue an interrupted study up to the target it was started with."""
    spec = folder.read_spec()
    state = folder.read_state()
    with study_lock(folder.path):
        return _run(folder, spec, None, state.target, options, state.skip_sanity, lambda s: s)


def sync(
    folder: StudyFolder, options: SessionOptions, *, rebuild: bool = False
) -> tuple[list[str], list[str]]:
    """Send the records MLflow misses; returns (sent, still waiting). ``rebuild`` sets the
    study's own store aside first and records everything again, from the folder."""
    from orchestrator.tracking.record import pending, record_pending

    spec = folder.read_spec()
    server = options.tracking_uri or folder.read_state().tracking_uri
    if rebuild and server:
        raise BabysitterError(
            f"--rebuild: study {str(folder.path)!r} records to {server}, a server's store; "
            "--rebuild only replaces the study folder's own store"
        )
    with study_lock(folder.path):
        if rebuild:
            _set_store_aside(folder, options.echo)
        uri = _check_tracking(folder, spec, options)
        tracker = _tracker(folder, spec, uri, options)  # opened even when nothing waits
        waiting = pending(folder)
        left = record_pending(tracker, folder, spec) if waiting else []
    return [step for step in waiting if step not in left], left


def _set_store_aside(folder: StudyFolder, echo: Echo) -> None:
    from orchestrator.tracking.sqlite_store import embedded_uri, forget_store

    forget_store(embedded_uri(folder.path))
    store = folder.path / "mlflow"
    if store.exists():
        aside = folder.path / f"mlflow.set-aside-{time.strftime('%Y%m%d-%H%M%S')}"
        store.rename(aside)
        echo(f"mlflow   set the old store aside: {aside}")
    folder.update_state(recorded=())


def load_study_data(
    spec: StudySpec, budget: BudgetName | None, cache_dir: Path, echo: Echo
) -> tuple[StudySpec, DataSplits]:
    """Decode the data once (the trials get it through Ray's object store) and, for a new
    study, scale the spec to ``budget`` now that the training split's size is known."""
    if budget is None:
        data = load_data(spec.base_config(), cache_dir)
    else:
        data = load_data(spec.base_config().replace(train_subset=None), cache_dir)
        spec = spec.with_budget(budget, train_images=len(data.train))
        if spec.trial.get("train_subset") is not None:
            data = load_data(spec.base_config(), cache_dir)
    echo(f"data     {data.summary()}")
    for config in spec.model_configs():  # a broken network is one line before anything runs
        check_model(config, data)
    return spec, data


def _run(
    folder: StudyFolder,
    spec: StudySpec,
    budget: BudgetName | None,
    target: Step,
    options: SessionOptions,
    skip_sanity: bool,
    prepare: Callable[[StudySpec], StudySpec],
) -> Summary:
    folder.check()
    uri = _check_tracking(folder, spec, options)
    try:
        spec, data = load_study_data(spec, budget, options.cache_dir, options.echo)
        return _study(folder, spec, data, target, options, uri, skip_sanity, prepare)
    except BabysitterError:
        raise
    except KeyboardInterrupt:
        raise interrupted(folder.path) from None
    except Exception as exc:  # a write that failed for want of space, wherever it was
        if out_of_room(folder.path, exc):
            raise disk_full(folder.path) from None
        raise failed(folder.path, folder.logs, exc) from None


def _study(
    folder: StudyFolder,
    spec: StudySpec,
    data: DataSplits,
    target: Step,
    options: SessionOptions,
    uri: str | None,
    skip_sanity: bool,
    prepare: Callable[[StudySpec], StudySpec],
) -> Summary:
    from orchestrator.cluster.ray_runtime import check_resources, check_shared_storage, ray_runtime
    from orchestrator.report.observer import ReportObserver
    from orchestrator.tracking.observer import MlflowObserver

    runner = options.runner
    needed = runner is None and folder.needs_search(target, spec)
    log, lost = folder.logs / "ray.log", _lost(folder)
    with ray_runtime(options.address, needed=needed, log=log, on_lost=lost):
        if runner is None:
            from orchestrator.search.ray_stage import RayStageRunner

            runner = RayStageRunner()
            check_resources(spec.resources)
            nodes = check_shared_storage(folder.path)
            if nodes:
                options.echo(f"cluster  all {nodes} Ray nodes see the study folder {folder.path}")
        spec = prepare(spec)  # from here on, a user's model file is the study folder's copy
        tracker = _tracker(folder, spec, uri, options)
        report = spec.outputs.report
        mlflow = MlflowObserver(tracker, folder, spec, options.echo, figures_follow=report)
        observers: list[StudyObserver] = [mlflow, ConsoleObserver(options.echo)]
        if report:  # first, as its line reads best before the step's summary
            then = mlflow.figures_saved  # MLflow records the step once it has the figures
            observers.insert(0, ReportObserver(folder, options.cache_dir, options.echo, then))
        study = Study(folder, spec, data, runner, observers, skip_sanity=skip_sanity)
        return study.run(target)


def _lost(folder: StudyFolder) -> Callable[[str, str], None]:
    """What a study says when its local Ray runtime dies under it: the CLI's one line, written
    here because the process ends right after (see ``ray_runtime``)."""

    def lost(what: str, details: str) -> None:
        error = RuntimeError(f"the local Ray runtime: {what}")
        error = failed(folder.path, folder.logs, error, details)
        sys.stderr.write(f"Error: {error}\n")
        sys.stderr.flush()

    return lost


def _check_tracking(folder: StudyFolder, spec: StudySpec, options: SessionOptions) -> str | None:
    """The study's tracking URI, a server checked now: a wrong one stops the study before any
    data is decoded or trial started."""
    from orchestrator.tracking.record import tracking_choice, tracking_target
    from orchestrator.tracking.sqlite_store import relocate
    from orchestrator.tracking.store import connect

    uri = tracking_choice(folder, options.tracking_uri)
    if uri is None and relocate(folder.path, spec.name):
        options.echo(f"mlflow   the study folder moved: its store now points at {folder.path}")
    # the study folder's own store is made with the folder, and checked once it exists
    if uri is not None or (folder.path / "mlflow" / "mlflow.db").exists():
        connect(tracking_target(folder, spec, uri), options.echo)
    return uri


def _tracker(folder: StudyFolder, spec: StudySpec, uri: str | None, options: SessionOptions):
    from orchestrator.tracking.record import tracking_target
    from orchestrator.tracking.store import connect

    if folder.read_state().tracking_uri != uri:
        folder.update_state(tracking_uri=uri)
    target = tracking_target(folder, spec, uri, folder.study_id(), options.tracking_wait)
    return connect(target, options.echo)
