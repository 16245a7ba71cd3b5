"""What mattered in a round: each searched parameter's importance (fANOVA, through Optuna's
evaluator) and how far ASHA let trials go (its rungs)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from orchestrator.names import METRIC
from orchestrator.report.study_view import StageView
from trainables.status import TrialStatus

MIN_TRIALS = 5  # fewer scored trials than this tell nothing about importance


@dataclass(frozen=True)
class Rung:
    epoch: int
    reached: int  # trials that ran at least this many epochs
    stopped: int  # trials ASHA stopped here


def importance(stage: StageView, seed: int = 0) -> dict[str, float]:
    """{parameter: share of the score's variance}, largest first; {} with too few trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    params = {n: p for n, p in stage.space.items() if n in stage.tables.trials}
    rows = stage.tables.trials[stage.tables.trials[METRIC].notna()]
    rows = rows[rows[METRIC].map(lambda v: math.isfinite(float(v)))]
    if len(rows) < MIN_TRIALS or not params:
        return {}
    distributions = {}
    for name, param in params.items():
        if param.numeric:
            box = param.range()
            low = min(box.low, float(rows[name].min()))
            high = max(box.high, float(rows[name].max()))
            distributions[name] = FloatDistribution(low, high, log=box.log)
        else:
            distributions[name] = CategoricalDistribution(list(param.values))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for row in rows.to_dict("records"):
        values = {n: _value(row[n], params[n].numeric) for n in params}
        study.add_trial(
            optuna.trial.create_trial(
                params=values, distributions=distributions, value=float(row[METRIC])
            )
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shares = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: float(share) for name, share in shares.items()}


def rungs(stage: StageView) -> list[Rung]:
    """The epochs where ASHA stopped trials, plus the last one: how many reached each."""
    trials = stage.tables.trials
    if not len(trials):
        return []
    ran = trials["epochs_run"].astype(int)
    stopped = trials["status"] == TrialStatus.STOPPED
    epochs = sorted(set(ran[stopped]) | {int(trials["epochs"].max())})
    return [Rung(e, int((ran >= e).sum()), int((stopped & (ran == e)).sum())) for e in epochs]


def _value(value, numeric: bool):
    return float(value) if numeric else value.item() if hasattr(value, "item") else value
