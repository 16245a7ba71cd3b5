"""A study: coarse stage -> narrowing -> fine stage -> final training -> test, all in one
study folder, each step skipped when its output is already there (which is how resume works)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator import console
from orchestrator.narrowing import narrow
from orchestrator.ray_trainable import run_trial
from orchestrator.results import rank, read_tables, write_tables
from orchestrator.run_folder import RunFolder, train_run
from orchestrator.sanity_stage import run_sanity
from orchestrator.search_space import Param, parse_space
from orchestrator.stage import METRIC, StageRun, run_stage
from orchestrator.study_folder import StudyFolder
from orchestrator.study_record import EXAMPLE_NAME, pending, record_pending, stage_params
from orchestrator.study_spec import STAGES, StudySpec
from orchestrator.tracking import StudyTracker
from orchestrator.trial_recorder import TrialRecorder
from trainables.config import TrialConfig
from trainables.datasets import DataSplits, load_data
from trainables.errors import BabysitterError
from trainables.metrics import ClassificationReport
from trainables.train import DIVERGED as TRAIN_DIVERGED

Echo = Callable[[str], None]
RETRY_WAIT_S = 5.0


def load_study_data(
    spec: StudySpec, budget: str | None, cache_dir: Path, echo: Echo
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
    return spec, data


def run_study(
    folder: StudyFolder,
    spec: StudySpec,
    data: DataSplits,
    *,
    target: str = "final",
    echo: Echo = print,
    trainable: Callable[..., None] = run_trial,
    tracker: StudyTracker | None = None,
    skip_sanity: bool = False,
) -> dict[str, Any]:
    """Run every step up to ``target`` that has not finished yet; return the summary. With a
    ``tracker``, every finished step is recorded in MLflow as well; records the server missed
    are sent when it answers again, waiting for it at the end for ``tracker.target.wait_s``."""
    if tracker is not None:
        echo(f"mlflow   experiment {tracker.target.experiment!r} at {tracker.target.uri}")
        _record(tracker, folder, spec, echo)
    summary = _steps(folder, spec, data, target, echo, trainable, tracker, skip_sanity)
    if tracker is not None:
        _record(tracker, folder, spec, echo, wait_s=tracker.target.wait_s)
    return summary


def _steps(
    folder: StudyFolder,
    spec: StudySpec,
    data: DataSplits,
    target: str,
    echo: Echo,
    trainable: Callable[..., None],
    tracker: StudyTracker | None,
    skip_sanity: bool,
) -> dict[str, Any]:
    echo(
        f"study    {spec.name} (budget {spec.budget}) in {folder.path}: coarse "
        f"{spec.coarse.trials}x{spec.coarse.epochs} ep, fine {spec.fine.trials}x{spec.fine.epochs} "
        f"ep, final {spec.final_epochs} ep"
    )
    summary: dict[str, Any] = {"study": spec.name, "budget": spec.budget}
    spec = _sanity(folder, spec, data, echo, tracker, skip_sanity, shown=target == "sanity")
    sanity = folder.read_sanity()
    if sanity is not None:
        summary["sanity"] = {"passed": sanity["passed"], "lr_range": sanity["lr_range"]}
    if target == "sanity":
        return summary
    coarse = _stage(folder, spec, "coarse", spec.space(), data, echo, trainable, tracker)
    summary["coarse"] = _best_row(coarse, spec.space())
    if target == "coarse":
        return summary
    fine_space = _narrowing(folder, spec, coarse, echo)
    fine = _stage(folder, spec, "fine", fine_space, data, echo, trainable, tracker)
    summary["fine"] = _best_row(fine, fine_space)
    if target == "fine":
        return summary
    best = rank(fine)
    if best.empty:
        raise BabysitterError(_nothing_usable("fine", fine))
    chosen = _config_of(best.iloc[0], spec, fine_space)
    summary["final"] = _final(folder, chosen, list(fine_space), data, echo, tracker)
    (folder.path / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _sanity(
    folder: StudyFolder,
    spec: StudySpec,
    data: DataSplits,
    echo: Echo,
    tracker: StudyTracker | None,
    skip: bool,
    shown: bool,
) -> StudySpec:
    """The sanity checks before the coarse stage (once: a resumed study keeps its result;
    ``shown`` prints it again); returns ``spec`` with ``lr: auto`` replaced by the range they
    proposed."""
    if (folder.results / "coarse.parquet").exists() and not shown:
        pass
    elif skip:
        echo("sanity   skipped (--skip-sanity)")
    else:
        try:
            run_sanity(folder, spec, data, echo)
        finally:
            if tracker is not None:
                _record(tracker, folder, spec, echo)
    resolved = folder.resolve(spec)
    if spec.lr_auto:
        if resolved.lr_auto:
            raise BabysitterError(
                "search_space.lr is auto, and this study has no lr range from the sanity "
                "checks' lr probe; drop --skip-sanity, or give lr a range in the spec"
            )
        echo(f"sanity   lr: auto -> coarse lr {resolved.space()['lr'].describe()}")
    return resolved


def _record(
    tracker: StudyTracker, folder: StudyFolder, spec: StudySpec, echo: Echo, wait_s: float = 0
) -> None:
    """Send what MLflow misses; say what waits, and what was sent late."""
    waiting = pending(folder)
    left = record_pending(tracker, folder, spec)
    deadline = time.monotonic() + wait_s
    if left and wait_s > 0:
        echo(
            f"mlflow   waiting up to {wait_s:.0f} s for {tracker.target.uri} to record "
            + ", ".join(left)
        )
    missed = tracker.delayed | set(left)
    while left and time.monotonic() < deadline:
        time.sleep(RETRY_WAIT_S)
        left = record_pending(tracker, folder, spec)
    late = [step for step in waiting if step in missed and step not in left]
    if late:
        echo(f"mlflow   recorded after the outage: {', '.join(late)}")
    if left:
        echo(
            f"mlflow   not recorded yet: {', '.join(left)} ({tracker.target.uri} did not answer); "
            f"the records wait in the study folder: `babysit sync {folder.path}` sends them"
        )
    tracker.delayed = set(left) | (tracker.delayed - set(late))


def _stage(
    folder: StudyFolder,
    spec: StudySpec,
    name: str,
    space: dict[str, Param],
    data: DataSplits,
    echo: Echo,
    trainable: Callable[..., None],
    tracker: StudyTracker | None,
) -> pd.DataFrame:
    tables = read_tables(folder.results, name)
    if tables is None:
        stage = spec.stage(name)
        echo(
            f"{name:<6} {stage.trials} trials x {stage.epochs} epochs, {stage.search} search, "
            f"{stage.scheduler.type} scheduler: "
            + ", ".join(f"{p.name} {p.describe()}" for p in space.values())
        )
        run = StageRun(
            name,
            stage,
            space,
            spec.base_config(),
            spec.resources,
            spec.retries,
            folder.path / "ray",
            seed=spec.base_config().seed + STAGES.index(name),
        )
        callbacks = []
        if tracker is not None:
            params = stage_params(spec, name, space)
            tracker.live(lambda: tracker.stage_run(name, params))
            base = run.base.replace(epochs=stage.epochs).to_dict()
            callbacks.append(TrialRecorder(tracker.target, name, base, space, echo))
        tables = run_stage(run, data, echo=echo, trainable=trainable, callbacks=callbacks)
        write_tables(folder.results, name, *tables)
        if tracker is not None:
            _record(tracker, folder, spec, echo)
    else:
        echo(f"{name:<6} already finished: {folder.results / (name + '.parquet')}")
    trials = tables[0]
    echo(console.stage_table(name, trials, list(space), spec.narrowing.top_k))
    return trials


def _narrowing(
    folder: StudyFolder, spec: StudySpec, coarse: pd.DataFrame, echo: Echo
) -> dict[str, Param]:
    if not folder.narrowing_file.exists():
        space = spec.space()
        numeric = [p.range() for p in space.values() if p.numeric]
        try:
            decisions = narrow(
                numeric, coarse.to_dict("records"), metric=METRIC, top_k=spec.narrowing.top_k
            )
        except ValueError:
            raise BabysitterError(_nothing_usable("coarse", coarse)) from None
        fine = dict(space)
        for d in decisions:
            fine[d.new.name] = space[d.new.name].with_range(d.new)
        record = {
            "metric": METRIC,
            "top_k": spec.narrowing.top_k,
            "decisions": [
                {
                    "name": d.old.name,
                    "old": space[d.old.name].to_spec(),
                    "new": fine[d.old.name].to_spec(),
                    "reason": d.reason,
                    "trial_ids": list(d.trial_ids),
                }
                for d in decisions
            ],
            "fine_space": {name: p.to_spec() for name, p in fine.items()},
        }
        folder.narrowing_file.write_text(json.dumps(record, indent=2) + "\n")
    record = json.loads(folder.narrowing_file.read_text())
    echo(console.narrowing_lines(record))
    return parse_space(record["fine_space"])


def _config_of(row: pd.Series, spec: StudySpec, space: dict[str, Param]) -> TrialConfig:
    values = {name: _plain(row[name]) for name in space}
    return spec.base_config().replace(
        **values, epochs=spec.final_epochs, threads=os.cpu_count() or 1
    )


def _final(
    folder: StudyFolder,
    config: TrialConfig,
    searched: list[str],
    data: DataSplits,
    echo: Echo,
    tracker: StudyTracker | None,
) -> dict:
    run = RunFolder.open(folder.final, resume=True)
    result_file = folder.final / "result.json"
    if result_file.exists():
        echo(f"final  already trained: {folder.final}")
    else:
        echo(f"final  training the best fine config for {config.epochs} epochs")
        np.save(folder.final / EXAMPLE_NAME, _input_example(data))

        def on_epoch(report) -> None:
            if tracker is not None:
                row = {**report.metrics, "trial_status": report.status}
                tracker.live(lambda: _log_final_epoch(tracker, config, row))
            echo(
                "final  "
                + console.epoch_line(report.epoch, config.epochs, report.metrics, report.status)
            )

        train_run(run, config, data, on_epoch=on_epoch)
    outcome = json.loads(result_file.read_text())
    chosen = json.loads((folder.final / "config.json").read_text())
    echo("chosen   " + ", ".join(f"{k}={_short(chosen[k])}" for k in searched))
    if outcome["status"] == TRAIN_DIVERGED:
        echo(f"final  diverged: {outcome['reason']}")
        return {"status": TRAIN_DIVERGED, "config": chosen}
    test = json.loads((folder.final / "test_metrics.json").read_text())
    echo(console.test_summary(ClassificationReport(**test)))
    return {"status": outcome["status"], "config": chosen, "test_accuracy": test["accuracy"]}


def _log_final_epoch(tracker: StudyTracker, config: TrialConfig, row: dict[str, Any]) -> None:
    tracker.log_epochs(tracker.stage_run("final", config.to_dict()), [row])


def _input_example(data: DataSplits) -> np.ndarray:
    """Two normalized test images: what the logged model takes as input."""
    shape = (1, data.channels, 1, 1)
    image = data.test.images[:2].astype(np.float32)
    mean = np.asarray(data.mean, np.float32).reshape(shape)
    return (image - mean) / np.asarray(data.std, np.float32).reshape(shape)


def _best_row(trials: pd.DataFrame, space: dict[str, Param]) -> dict[str, Any]:
    best = rank(trials)
    if best.empty:
        return {}
    row = best.iloc[0]
    return {
        "trial_id": row["trial_id"],
        "val_acc": float(row["val_acc"]),
        **{name: _plain(row[name]) for name in space},
    }


def _nothing_usable(stage: str, trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts().to_dict()
    return (
        f"the {stage} stage has no usable trial ({', '.join(f'{v} {k}' for k, v in counts.items())}"
        "); lower the lr range or check `babysit results` for the errors"
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
