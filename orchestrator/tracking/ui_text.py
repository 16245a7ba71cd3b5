"""What the MLflow UI shows of a study beyond its numbers: the experiment's description, the
runs table's columns and order, each step's note, a trial's ending in its run name."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orchestrator.names import METRIC
from trainables.status import TrialStatus

NOTE = "mlflow.note.content"  # the description the UI shows for an experiment or run
VIEW = "babysitter"  # the runs table's view: the URL ``babysit ui`` prints opens it


def experiment_tags(name: str) -> dict[str, str]:
    """Model training, not GenAI (the UI then opens on the runs table), and what it holds."""
    return {
        "mlflow.experimentKind": "custom_model_development",
        NOTE: (
            f"babysitter study `{name}`: one parent run per step (sanity, coarse, fine, ..., "
            "final) and one child run per trial. Sort the runs by `val_acc`; `log10_lr` and "
            "`log10_l2` put log-searched settings on readable axes; each trial's `status` tag "
            "says whether it completed or ASHA stopped it. The study folder holds the same "
            "record and `report.html`, the command center."
        ),
    }


def shared_view(searched: Sequence[str]) -> dict[str, str]:
    """The runs table as a reviewer wants it: best val_acc first, with the searched settings,
    the stage and how each trial ended as columns (the UI's default shows none of them). The
    UI reads it from this experiment tag when its URL carries ``viewStateShareKey``."""
    columns = [f"metrics.`{METRIC}`", *(f"params.`{name}`" for name in searched)]
    columns += ["tags.`stage`", "tags.`status`"]
    state = {"selectedColumns": columns, "orderByKey": f"metrics.`{METRIC}`", "orderByAsc": False}
    return {f"mlflow.sharedViewState.{VIEW}": json.dumps(state)}


def runs_url(url: str, experiment: str) -> str:
    """The experiment's runs table in the UI at ``url``, in babysitter's view."""
    return f"{url}/#/experiments/{experiment}/runs?viewStateShareKey={VIEW}"


def stage_note(stage: str) -> str:
    """The description a step's parent run shows in the UI."""
    if stage == "sanity":
        return (
            "The babysitting checks before any search: initial loss, regularization, "
            "overfitting 20 examples, the lr probe (its plot is an artifact)."
        )
    if stage == "final":
        return (
            "The chosen config trained once more and tested: test metrics, the model, and the "
            "report's model figures (filters, activations, confusion matrix) as artifacts."
        )
    return (
        f"Search round `{stage}`: one child run per trial, its settings as params, metrics per "
        "epoch; `best_run_id` names the winner; the search figures are artifacts."
    )


def status_name(name: str, status: str, epochs_run: int) -> str:
    """The run name with how the trial ended, where the UI's run table shows it (its own
    status column says FINISHED, green, for an ASHA stop too)."""
    base = name.split(" [", 1)[0]
    if status == TrialStatus.COMPLETED or not base:
        return base
    if status == TrialStatus.STOPPED:
        return f"{base} [stopped at epoch {epochs_run}]"
    return f"{base} [{status}]"
