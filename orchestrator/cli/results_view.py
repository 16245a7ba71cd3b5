"""What `babysit results` shows: each round's trials in the ranking's order (or a column's),
the winner marked, and the sanity and final steps' records as text."""

from __future__ import annotations

import pandas as pd

from orchestrator.console import cell, epoch_line, sanity_table, test_summary
from orchestrator.names import METRIC, Step
from orchestrator.search.ranking import rank
from orchestrator.study.folder import StudyFolder
from trainables.errors import BabysitterError
from trainables.metric_names import TRIAL_STATUS

RANKING = (
    f"ranked by {METRIC}, best first; ties within one standard error by val_loss, then the "
    "simpler config; * marks each round's winner"
)


def results_table(
    folder: StudyFolder,
    stage: str | None,
    per_epoch: bool,
    sort_by: str | None,
    top: int | None,
    every: bool = False,
) -> tuple[pd.DataFrame, str]:
    """The rows to print (the columns a reader compares; every column with ``every``, for an
    export), and the footer that says how they are ordered."""
    spec = folder.read_spec()
    done = folder.rounds_done()
    if stage is not None and stage not in done:
        raise BabysitterError(
            f"--stage {stage!r}: {str(folder.path)!r} has no finished step of that name; its "
            f"finished steps: {', '.join(folder.finished()) or 'none yet'}"
        )
    frames = []
    for name in [stage] if stage else done:
        tables = folder.read_stage(name)
        trials = _ordered(tables.trials, sort_by)
        if top is not None:
            trials = trials.head(top)
        if per_epoch:
            epochs = tables.epochs
            order = {t: i for i, t in enumerate(trials["trial_id"])}
            kept = epochs[epochs["trial_id"].isin(order)]
            frames.append(kept.sort_values(["trial_id", "epoch"], key=_by(order)))
        else:
            frames.append(trials)
    if not frames:
        raise BabysitterError(
            f"{str(folder.path)!r} has no finished search round yet; run or resume the study first"
        )
    frame = pd.concat(frames, ignore_index=True)
    footer = RANKING if sort_by is None else f"sorted by {sort_by}{_direction(sort_by)}"
    if every:
        return frame, footer
    if per_epoch:
        shown = ["stage", "trial_id", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
        shown += ["lr", "update_ratio/conv1"]
    else:
        shown = ["best", "stage", "trial_id", "status", "epochs_run", "retries", *spec.search_space]
        shown += ["train_loss", "val_loss", "val_acc", "val_acc_se", "seconds"]
        if frame["flag"].ne("").any():  # one word a cell, so that columns split on blanks
            frame = frame.assign(flag=frame["flag"].str.replace(" ", "-").replace("", "-"))
            shown.insert(shown.index("status") + 1, "flag")
            footer += "; a flagged trial ranks below every healthy one (flag says why)"
        if frame.get("asha_rung", pd.Series(dtype=float)).notna().any():
            shown += ["asha_cutoff", "asha_compared"]  # a stopped trial: its val_acc fell below
            footer += "; a trial ASHA stopped fell below asha_cutoff, from asha_compared trials"
    return frame[[c for c in shown if c in frame]], footer


def step_text(folder: StudyFolder, step: str) -> str:
    """The sanity checks' table, or the final run's epochs and test report."""
    if step == Step.SANITY:
        record = folder.read_sanity()
        if record is None:
            raise BabysitterError(
                f"--stage sanity: {str(folder.path)!r} has no sanity record (skipped or not run "
                "yet); `babysit sanity` runs the checks"
            )
        verdict = "passed" if record.passed else "FAILED"
        return f"sanity   {verdict} ({record.finished_at})\n" + sanity_table(record.report)
    final = folder.read_final()
    if final is None:
        raise BabysitterError(
            f"--stage final: {str(folder.path)!r} has no final run yet; run or resume the study"
        )
    epochs = len(final.epochs)
    searched = folder.read_spec().search_space
    chosen = ", ".join(f"{k}={cell(final.settings[k])}" for k in searched if k in final.settings)
    lines = [f"final  chosen {chosen}"]
    lines += [
        "final  " + epoch_line(int(r["epoch"]), epochs, r, r.get(TRIAL_STATUS, ""))
        for r in final.epochs
    ]
    lines.append(
        test_summary(final.test) if final.test else f"final  {final.status}: {final.reason}"
    )
    return "\n".join(lines)


def _ordered(trials: pd.DataFrame, sort_by: str | None) -> pd.DataFrame:
    """The round's trials by the ranking (unusable ones last), the winner marked."""
    ranked = rank(trials)
    rest = trials[~trials["trial_id"].isin(ranked["trial_id"])]
    ordered = pd.concat([ranked[[*trials.columns, "flag"]], rest], ignore_index=True)
    ordered["flag"] = ordered["flag"].fillna("")
    ordered.insert(0, "best", ["*" if i == 0 and len(ranked) else "" for i in range(len(ordered))])
    if sort_by is None:
        return ordered
    if sort_by not in ordered:
        raise BabysitterError(
            f"--sort {sort_by!r}: no such column; use one of {', '.join(ordered.columns)}"
        )
    descending = _direction(sort_by) == " (best first)"
    return ordered.sort_values(sort_by, ascending=not descending, kind="stable")


def _direction(column: str) -> str:
    return " (best first)" if column.endswith("acc") else " (smallest first)"


def _by(order: dict[str, int]):
    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "trial_id" else column

    return key
