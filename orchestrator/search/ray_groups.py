"""A fused stage on Ray: each group of trials (``groups.py``) trains as one Ray task on one trial's
resources, the groups spread over the cluster by Ray. One actor, the stage's judge, is the only
writer of the stage's logs: it logs each member's epochs, decides ASHA at the member's rung
(``rungs.py``, as for any trial) and answers the group whether the member trains on. The driver
forwards the judge's events to the study's observers and retries a failed group's members still
training from their own checkpoints (``checkpoints/<trial>/state.pt``). A killed stage resumes the
same way: members that ended are read from the log, the others go on from their checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.names import METRIC, STOPPED_MARK
from orchestrator.search.checkpoints import CHECKPOINTS
from orchestrator.search.epoch_log import EPOCHS_FILE, Ended, append_end, read_log, settled
from orchestrator.search.events import StageEvents, TrialInfo
from orchestrator.search.groups import Fusion, fused_groups, stage_trials
from orchestrator.search.judging import ended_record, epoch_judge
from orchestrator.search.results import (
    DIVERGED,
    ERRORED,
    STOPPED,
    StageTables,
    stage_tables,
    trial_status,
)
from orchestrator.search.rungs import DECISIONS_FILE, rungs_of
from orchestrator.search.stage import StageRun, Tally
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.epoch import RUNNING, EpochReport
from trainables.fused_training import train_fused
from trainables.metric_names import TRIAL_STATUS
from trainables.status import TrialStatus

FUSED_MARK = "fused.json"  # a stage that began fused, and its group size: it resumes fused
STATE = "state.pt"
WAIT_S = 0.5  # how often the driver forwards the judge's events while groups train


def began_fused(stage: Path) -> Fusion | None:
    mark = stage / FUSED_MARK
    return Fusion(int(json.loads(mark.read_text())["size"])) if mark.exists() else None


def mark_fused(stage: Path, fusion: Fusion) -> None:
    stage.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage / CHECKPOINTS, ignore_errors=True)  # a stage begun anew
    for log in (EPOCHS_FILE, DECISIONS_FILE):  # an unrestorable start's, under other ids
        (stage / log).unlink(missing_ok=True)
    (stage / FUSED_MARK).write_text(json.dumps({"size": fusion.size, "line": fusion.line}))


class _Recorded(StageEvents):
    """The events a judge saw, for the driver to replay to the real observers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def trial_started(self, stage: str, trial: TrialInfo) -> None:
        self.calls.append(("trial_started", (stage, trial)))

    def trial_epoch(self, stage: str, trial: TrialInfo, result: dict[str, Any]) -> None:
        self.calls.append(("trial_epoch", (stage, trial, result)))


@ray.remote(num_cpus=0)
class StageJudge:
    """The stage's logs, rungs and events, shared by all its groups: every trial's epochs (those
    logged before a resume too), so that how a trial ended is decided here, without reading the
    log again."""

    def __init__(self, run: StageRun) -> None:
        self.run, self.events, self.start = run, _Recorded(), time.monotonic()
        self.rungs = rungs_of(run.stage, run.path / DECISIONS_FILE)
        self.rows: dict[str, list[dict[str, Any]]] = read_log(run.path)[0]
        self.judges: dict[str, Callable[[EpochReport], bool]] = {}
        self.stopped: set[str] = set()

    def started(self, trials: list[TrialInfo]) -> None:
        for trial in trials:
            self.events.trial_started(self.run.name, trial)

    def epoch(self, trial: TrialInfo, report: EpochReport) -> bool:
        if trial.trial_id not in self.judges:
            rows = self.rows.setdefault(trial.trial_id, [])
            judge = epoch_judge(self.run, trial, rows, self.events, self.rungs, self.start)
            self.judges[trial.trial_id] = judge
        keep = self.judges[trial.trial_id](report)
        if not keep:
            self.stopped.add(trial.trial_id)
        return keep

    def training(self, trial_ids: list[str]) -> list[str]:
        """Those of ``trial_ids`` neither stopped nor finished."""
        return [
            t
            for t in trial_ids
            if t not in self.stopped
            and self.rows.get(t, [{}])[-1].get(TRIAL_STATUS, RUNNING) == RUNNING
        ]

    def end(self, trial_id: str, error: str = "", retries: int = 0) -> tuple[str, list[dict]]:
        """Log how ``trial_id`` ended (errored with ``error``, else as its epochs and rungs
        say): its status and its epochs."""
        rows = settled(self.rows.get(trial_id, []))
        status = ERRORED if error else self._ended(trial_id) or ERRORED
        append_end(self.run.path, trial_id, Ended(status, retries, error))
        return status, rows

    def end_finished(self, trial_ids: list[str]) -> dict[str, Ended]:
        """Those of ``trial_ids`` that reported their last epoch or were stopped at a rung in
        a stage killed before it logged their end: ended now, as they would have been."""
        found = {t: Ended(status) for t in trial_ids if (status := self._ended(t)) is not None}
        for trial_id, ended in found.items():
            append_end(self.run.path, trial_id, ended)
        return found

    def _ended(self, trial_id: str) -> str | None:
        """How a trial ended, from its epochs and the rungs; None while it trains on."""
        if trial_id in self.rungs.stopping():
            return STOPPED
        rows = settled(self.rows.get(trial_id, []))
        status = trial_status("RUNNING", rows[-1] if rows else {}, self.run.stage.epochs)
        return None if status == TrialStatus.RUNNING else status

    def drain(self) -> list[tuple[str, tuple]]:
        calls, self.events.calls = self.events.calls, []
        return calls


def train_group(
    configs: list[TrialConfig],
    data: DataSplits,
    *,
    trials: list[TrialInfo],
    judge: Any,
    checkpoints: Path,
    order_seed: int,
    first: bool,
    fused: Callable = train_fused,
) -> None:
    """One group as a Ray task: its members reported to (and judged by) the stage's judge."""
    if first:
        ray.get(judge.started.remote(trials))
    paths = [checkpoints / t.trial_id / STATE for t in trials]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)

    def on_epoch(k: int, report: EpochReport) -> bool:
        return ray.get(judge.epoch.remote(trials[k], report))

    fused(
        configs,
        data,
        on_epoch=on_epoch,
        checkpoint_paths=paths,
        resume=True,
        order_seed=order_seed,
    )


@dataclass
class _Group:
    trials: list[TrialInfo]
    order_seed: int  # the data order of the whole group, kept by the retries of its part
    retries: int = 0
    first: bool = True


class RayGroups:
    """Runs a fused stage; ``fused`` is the group trainable (``train_fused``; tests plant
    faults in it)."""

    def __init__(self, fused: Callable = train_fused) -> None:
        self.fused = fused

    def run(self, run: StageRun, data: DataSplits, events: StageEvents, size: int) -> StageTables:
        base = run.trial_base()
        rows, ends = read_log(run.path)
        if (run.path / STOPPED_MARK).exists():  # a full disk failed them: they run again
            ends = {t: e for t, e in ends.items() if e.status != ERRORED}
        if rows or ends:
            events.stage_resumed(run.name, run.path)
        trials = stage_trials(run, [*rows, *ends])
        configs = {t.trial_id: base.replace(**t.config) for t in trials}
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        judge = StageJudge.options(scheduling_strategy=here).remote(run)
        try:
            unended = [t.trial_id for t in trials if t.trial_id not in ends]
            ends |= ray.get(judge.end_finished.remote(unended))
            groups = [
                _Group(todo, configs[group[0].trial_id].seed)
                for group in fused_groups(trials, configs, size)
                if (todo := [t for t in group if t.trial_id not in ends])
            ]
            stage = _Stage(run, events, judge, self._launcher(run, data, judge, configs))
            stage.finished = {t: (e.status, _score(rows.get(t, []))) for t, e in ends.items()}
            stage.drive(groups)
        finally:
            ray.kill(judge)
            events.stage_ended(run.name)
        (run.path / STOPPED_MARK).unlink(missing_ok=True)
        rows, ends = read_log(run.path)
        rungs = rungs_of(run.stage, run.path / DECISIONS_FILE)
        records = [
            ended_record(t, ends[t.trial_id], rows.get(t.trial_id, []), rungs) for t in trials
        ]
        return stage_tables(run.name, records, base.flat())

    def _launcher(
        self, run: StageRun, data: DataSplits, judge: Any, configs: dict[str, TrialConfig]
    ) -> Callable[[_Group], Any]:
        """Starts a group as a Ray task on one trial's resources."""
        task = ray.remote(train_group).options(
            num_cpus=run.resources.cpus_per_trial,
            num_gpus=run.resources.gpus_per_trial,
            max_retries=0,  # the stage retries the members still training, not the group
        )
        data_ref = ray.put(data)

        def launch(group: _Group) -> Any:
            return task.remote(
                [configs[t.trial_id] for t in group.trials],
                data_ref,
                trials=group.trials,
                judge=judge,
                checkpoints=run.path / CHECKPOINTS,
                order_seed=group.order_seed,
                first=group.first,
                fused=self.fused,
            )

        return launch


class _Stage:
    """The driver's loop: groups launched up to ``max_concurrent``, the judge's events
    forwarded while they train, each group settled as it ends."""

    def __init__(self, run: StageRun, events: StageEvents, judge: Any, launch: Callable) -> None:
        self.run, self.events, self.judge, self.launch = run, events, judge, launch
        self.finished: dict[str, tuple[str, float | None]] = {}
        self.tally, self.start = Tally(run.trial_count), time.monotonic()
        self.training = 0  # members of the groups on Ray now

    def drive(self, groups: list[_Group]) -> None:
        pending, running = deque(groups), {}
        limit = self.run.resources.max_concurrent or len(groups) or 1
        try:
            while pending or running:
                while pending and len(running) < limit:
                    group = pending.popleft()
                    running[self.launch(group)] = group
                    self.training += len(group.trials)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                _forward(ray.get(self.judge.drain.remote()), self.events)
                for ref in ready:
                    pending.extend(self.settle(running.pop(ref), _error(ref)))
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def settle(self, group: _Group, error: str) -> list[_Group]:
        """End the members of a group that returned or failed; a failed group's members still
        training go on from their checkpoints, ``retries`` times (the group to run again)."""
        self.training -= len(group.trials)
        ids = [t.trial_id for t in group.trials]
        still = set(ray.get(self.judge.training.remote(ids))) if error else set()
        retry = bool(still) and group.retries < self.run.retries
        for trial in group.trials:
            if retry and trial.trial_id in still:
                continue
            failed = error if trial.trial_id in still else ""
            status, rows = self.end(trial, failed, group.retries)
            self.events.trial_finished(self.run.name, trial, status, len(rows))
            self.finished[trial.trial_id] = (status, _score(rows))
        statuses = [status for status, _ in self.finished.values()]
        statuses += [TrialStatus.RUNNING] * self.training
        scores = [score for _, score in self.finished.values() if score is not None]
        shown = self.tally.update(statuses, scores, time.monotonic() - self.start)
        if shown is not None:
            self.events.stage_progress(self.run.name, shown)
        if not retry:
            return []
        members = [t for t in group.trials if t.trial_id in still]
        return [_Group(members, group.order_seed, group.retries + 1, first=False)]

    def end(self, trial: TrialInfo, error: str, retries: int) -> tuple[str, list[dict[str, Any]]]:
        """Log how ``trial`` ended and keep its last checkpoint as ``epoch-N.pt``: its status
        and its epochs."""
        status, rows = ray.get(self.judge.end.remote(trial.trial_id, error, retries))
        state = self.run.path / CHECKPOINTS / trial.trial_id / STATE
        if rows and state.exists():
            epoch = int(rows[-1]["epoch"]) - (rows[-1].get(TRIAL_STATUS) == DIVERGED)
            os.replace(state, state.with_name(f"epoch-{epoch}.pt"))
        return status, rows


def _score(rows: list[dict[str, Any]]) -> float | None:
    last = settled(rows)[-1] if rows else {}
    score = last.get(METRIC)
    return None if score is None or last.get(TRIAL_STATUS) == DIVERGED else float(score)


def _forward(calls: list[tuple[str, tuple]], events: StageEvents) -> None:
    for hook, args in calls:
        getattr(events, hook)(*args)


def _error(ref: Any) -> str:
    """'' for a group that returned; else its failure in one line."""
    try:
        ray.get(ref)
        return ""
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if exc.cause is not None else exc
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:200]
    except ray.exceptions.RayError as exc:  # the worker died: killed, out of memory
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
