"""The report's pictures, one function per view, each a pure function of a ``StudyView`` that
returns a matplotlib figure (Agg, no display) or None when the study has nothing to show yet.
Colours: viridis for scores, Okabe-Ito for lines (both colour-blind safe). Figures are made
with matplotlib's object API (no pyplot, no global state), so reports can be drawn anywhere."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from orchestrator.names import METRIC
from orchestrator.report.study_view import StageView, StudyView
from trainables.metric_names import UPDATE_RATIO, layer_of
from trainables.metrics import ClassificationReport
from trainables.sanity_report import RATIO_RANGE
from trainables.status import TrialStatus

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
MARKERS = {
    TrialStatus.COMPLETED: ("o", "completed"),
    TrialStatus.STOPPED: ("s", "stopped by ASHA (size: epochs run)"),
    TrialStatus.DIVERGED: ("x", "diverged"),
    TrialStatus.ERRORED: ("X", "errored"),
}
TOP_CURVES = 3


def search_map(view: StudyView) -> Figure | None:
    """Every trial in the plane of each pair of searched parameters (one axis when only one is
    searched): where the good trials are, each round's box, the chosen config."""
    names = view.searched[:3]
    if not names:
        return None
    pairs = list(itertools.combinations(names, 2)) or [(names[0], METRIC)]
    figure, axes = subplots(1, len(pairs), figsize=(6.2 * len(pairs), 5), squeeze=False)
    trials = pd.concat([s.tables.trials for s in view.stages], ignore_index=True)
    scores = trials[METRIC].astype(float)
    norm = Normalize(*_score_limits(scores))
    chosen = _chosen(view)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        longest = max(trials["epochs"].max(), 1)
        for status, (marker, label) in MARKERS.items():
            rows = trials[trials["status"] == status]
            if not len(rows):
                continue
            size = 18 + 60 * rows["epochs_run"] / longest
            colour = rows[METRIC].astype(float) if y != METRIC else None
            common = {"marker": marker, "s": size, "label": f"{label} ({len(rows)})"}
            if status in (TrialStatus.DIVERGED, TrialStatus.ERRORED) or colour is None:
                ax.scatter(rows[x], rows[y].fillna(0), c="#777777", **common)
            else:
                ax.scatter(
                    rows[x],
                    rows[y],
                    c=colour,
                    cmap="viridis",
                    norm=norm,
                    **common,
                    edgecolors="black",
                    linewidths=0.3,
                )
        if y != METRIC:
            _boxes(ax, view, x, y)
        if chosen is not None and x in chosen and y in chosen:
            ax.scatter(
                [chosen[x]],
                [chosen[y]],
                marker="*",
                s=320,
                c="none",
                edgecolors="#D55E00",
                linewidths=1.8,
                label="chosen",
                zorder=5,
            )
        _log_axes(ax, view, x, y)
        ax.set_xlabel(_label(x))
        ax.set_ylabel(_label(y))
        ax.legend(fontsize=7, loc="best")
    if pairs[0][1] != METRIC:
        bar = figure.colorbar(ScalarMappable(norm, "viridis"), ax=axes[0, -1])
        bar.set_label(f"{METRIC} (last epoch)")
    figure.suptitle("Search map: every trial; boxes: the range each round searched")
    return figure


def choices(view: StudyView) -> Figure | None:
    """A panel per searched choice (batch_norm, augment, a model's ``arch.*`` choice, ...): every
    trial's score over the value it drew, a colour per round, so that what the top trials hold
    and what narrowing kept is seen at once; the chosen value is named below its panel."""
    names = view.choices[:6]
    if not names:
        return None
    figure, axes = subplots(1, len(names), figsize=(3.4 * len(names) + 1, 3.8), squeeze=False)
    chosen = _chosen(view) or {}
    jitter = np.random.default_rng(0)
    for ax, name in zip(axes[0], names, strict=True):
        values = list(view.stages[0].space[name].values)
        for stage, colour in zip(view.stages, OKABE_ITO, strict=False):
            rows = stage.tables.trials
            if name not in rows:
                continue
            where = [_position(values, v) for v in rows[name]]
            x = np.array(where, dtype=float) + jitter.uniform(-0.15, 0.15, len(where))
            for status, (marker, _) in MARKERS.items():
                mine = (rows["status"] == status).to_numpy()
                if mine.any():
                    scores = rows[METRIC].astype(float).fillna(0)[mine]
                    ax.scatter(x[mine], scores, marker=marker, s=22, color=colour, alpha=0.8)
            ax.scatter([], [], color=colour, label=stage.name)
        ax.set_xticks(range(len(values)), [_value_text(v) for v in values])
        ax.set_xlim(-0.6, len(values) - 0.4)
        if name in chosen:
            ax.set_xlabel(f"{name} (chosen: {_value_text(chosen[name])})")
        else:
            ax.set_xlabel(name)
        ax.set_ylabel(_label(METRIC))
        ax.legend(fontsize=7, loc="lower right")
    figure.suptitle("Choices: every trial's score by the value it drew (marker: status)")
    return figure


def _position(values: list[Any], value: Any) -> float:
    for i, known_value in enumerate(values):
        if known_value == value:
            return i
    return math.nan


def _value_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool | np.bool_) else str(value)


def curves(view: StudyView) -> Figure | None:
    """Loss and accuracy per epoch for the top trials of each round and the final run; dotted
    lines: the epochs where ASHA stopped trials (its rungs)."""
    runs = [(s.name, _top_histories(s), _rungs(s)) for s in view.stages]
    if view.final is not None and view.final.epochs:
        runs.append(("final", [("final", pd.DataFrame(view.final.epochs))], []))
    if not runs:
        return None
    figure, axes = subplots(len(runs), 2, figsize=(11, 3.2 * len(runs)), squeeze=False)
    for row, (name, histories, rungs) in zip(axes, runs, strict=True):
        for (label, history), colour in zip(histories, OKABE_ITO, strict=False):
            epoch = history["epoch"]
            data_loss = history["train_loss"] - history.get("train_penalty", 0.0)
            row[0].plot(epoch, data_loss, "--", color=colour, label=f"{label} train")
            row[1].plot(epoch, history["train_acc"], "--", color=colour, label=f"{label} train")
            if "val_loss" in history and history["val_loss"].notna().any():
                row[0].plot(epoch, history["val_loss"], "-", color=colour, label=f"{label} val")
                row[1].plot(epoch, history[METRIC], "-", color=colour, label=f"{label} val")
        for ax, what in zip(row, ("loss (cross-entropy, no L2 penalty)", "accuracy"), strict=True):
            for rung in rungs:
                ax.axvline(rung, color="#999999", linestyle=":", linewidth=1)
            ax.set_xlabel("epoch")
            ax.set_ylabel(what)
            ax.set_title(f"{name}: top {len(histories)}" if name != "final" else "final run")
        row[0].set_yscale("log")
        row[1].legend(fontsize=6, ncol=2, loc="lower right")
    return figure


def history(view: StudyView) -> Figure | None:
    """The best score so far against trials started and against wall time."""
    trials = [s.tables.trials for s in view.stages if len(s.tables.trials)]
    if not trials:
        return None
    figure, (by_trial, by_time) = subplots(1, 2, figsize=(11, 3.6))
    offset, start = 0, _study_start(view)
    for stage, colour in zip(view.stages, OKABE_ITO, strict=False):
        frame = stage.tables.trials.reset_index(drop=True)
        scores = frame[METRIC].astype(float).fillna(-math.inf)
        x = np.arange(offset + 1, offset + len(frame) + 1)
        by_trial.scatter(x, frame[METRIC], s=10, color=colour, alpha=0.5)
        by_trial.step(
            x,
            np.maximum.accumulate(scores.to_numpy()),
            where="post",
            color=colour,
            label=f"{stage.name}: best so far",
        )
        offset += len(frame)
        ended = _trial_end_times(stage)
        if ended is not None and start is not None:
            ended = ended.sort_values("timestamp")
            minutes = (ended["timestamp"] - start) / 60
            by_time.step(
                minutes,
                np.maximum.accumulate(ended[METRIC].fillna(-math.inf)),
                where="post",
                color=colour,
                label=stage.name,
            )
    by_trial.set_xlabel("trial (in start order, rounds one after another)")
    by_trial.set_ylabel(f"{METRIC}")
    by_trial.legend(fontsize=7)
    by_time.set_xlabel("wall time since the first trial (min)")
    by_time.set_ylabel(f"best {METRIC} so far")
    if start is None:
        by_time.text(
            0.5, 0.5, "no timestamps in this study folder", ha="center", transform=by_time.transAxes
        )
    else:
        by_time.legend(fontsize=7)
    figure.suptitle("Optimization history")
    return figure


def update_ratios(view: StudyView) -> Figure | None:
    """The final run's update / weight ratio per layer and epoch, with the lecture's band."""
    if view.final is None or not view.final.epochs:
        return None
    frame = pd.DataFrame(view.final.epochs)
    layers = [c for c in frame.columns if c.startswith(UPDATE_RATIO)]
    if not layers:
        return None
    figure, ax = subplots(figsize=(7, 4))
    low, high = RATIO_RANGE
    ax.axhspan(low, high, color="#009E73", alpha=0.08, label=f"{low:.0e} .. {high:.0e}")
    ax.axhline(1e-3, color="#009E73", linestyle="--", linewidth=1, label="1e-3")
    for column, colour in zip(layers, OKABE_ITO, strict=False):
        ax.plot(
            frame["epoch"],
            frame[column],
            marker=".",
            color=colour,
            label=layer_of(column),
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("update / weight (norm ratio, last step of the epoch)")
    ax.set_title("Final run: update / weight ratio per layer")
    ax.legend(fontsize=7, ncol=2)
    return figure


def confusion(test: ClassificationReport | None) -> Figure | None:
    if test is None:
        return None
    matrix = np.array(test.confusion)
    size = max(3.5, 0.55 * len(test.class_names) + 2)
    figure, ax = subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="viridis")
    ticks = range(len(test.class_names))
    ax.set_xticks(ticks, test.class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, test.class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = matrix.max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="black" if count > threshold else "white",
        )
    figure.colorbar(image, ax=ax, label="test images")
    ax.set_title(f"Test confusion matrix (accuracy {test.accuracy:.4f})")
    return figure


def importance_bars(importance: dict[str, dict[str, float]]) -> Figure | None:
    """Per round, each searched parameter's share of the score's variance."""
    rounds = {k: v for k, v in importance.items() if v}
    if not rounds:
        return None
    figure, axes = subplots(1, len(rounds), figsize=(4 * len(rounds), 3), squeeze=False)
    for ax, (stage, shares) in zip(axes[0], rounds.items(), strict=True):
        names = list(shares)
        ax.barh(names, [shares[n] for n in names], color=OKABE_ITO[0])
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (fANOVA share of variance)")
        ax.set_title(stage)
    return figure


def _top_histories(stage: StageView) -> list[tuple[str, pd.DataFrame]]:
    epochs = stage.tables.epochs
    if not len(epochs):
        return []
    ids = list(stage.ranked["trial_id"][:TOP_CURVES])
    return [(i, epochs[epochs["trial_id"] == i].sort_values("epoch")) for i in ids]


def _rungs(stage: StageView) -> list[int]:
    trials = stage.tables.trials
    return sorted(set(trials.loc[trials["status"] == TrialStatus.STOPPED, "epochs_run"]))


def _trial_end_times(stage: StageView) -> pd.DataFrame | None:
    epochs = stage.tables.epochs
    if "timestamp" not in epochs or epochs["timestamp"].isna().all():
        return None
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1)
    return last[["trial_id", "timestamp", METRIC]].astype({METRIC: float})


def _study_start(view: StudyView) -> float | None:
    starts = []
    for stage in view.stages:
        epochs = stage.tables.epochs
        if "timestamp" in epochs and epochs["timestamp"].notna().any():
            first = epochs[epochs["epoch"] == epochs["epoch"].min()]
            starts.append(float((first["timestamp"] - first.get("time_total_s", 0)).min()))
    return min(starts) if starts else None


def _boxes(ax: Any, view: StudyView, x: str, y: str) -> None:
    for stage, colour in zip(view.stages, OKABE_ITO, strict=False):
        space = stage.space
        if x not in space or y not in space:
            continue
        bx, by = space[x].range(), space[y].range()
        ax.add_patch(
            Rectangle(
                (bx.low, by.low),
                bx.high - bx.low,
                by.high - by.low,
                fill=False,
                edgecolor=colour,
                linewidth=1.5,
                linestyle="-" if stage.name == "coarse" else "--",
            )
        )
        ax.annotate(
            f"{stage.name} box",
            (bx.high, by.high),
            fontsize=7,
            color=colour,
            ha="right",
            va="bottom",
        )


def _log_axes(ax: Any, view: StudyView, x: str, y: str) -> None:
    space = view.stages[0].space
    if x in space and space[x].range().log:
        ax.set_xscale("log")
    if y in space and space[y].range().log:
        ax.set_yscale("log")


def _chosen(view: StudyView) -> dict[str, Any] | None:
    if view.final is not None:
        return view.final.settings
    best = view.stages[-1].best if view.stages else None
    return None if best is None else best.to_dict()


def _score_limits(scores: pd.Series) -> tuple[float, float]:
    known = scores[np.isfinite(scores)]
    if not len(known):
        return 0.0, 1.0
    low, high = float(known.min()), float(known.max())
    return (low, high) if high > low else (low - 0.01, high + 0.01)


def _label(name: str) -> str:
    return {
        "lr": "learning rate (lr)",
        "l2": "L2 strength (l2)",
        METRIC: f"{METRIC} (last epoch)",
    }.get(name, name)


def subplots(rows: int = 1, columns: int = 1, **options: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a figure no backend or window manager holds."""
    figure = Figure(figsize=options.pop("figsize", None), layout="tight")
    return figure, figure.subplots(rows, columns, **options)
