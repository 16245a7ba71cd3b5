"""The final choice among the top candidates (``final: {candidates: 3, seeds: 2}``): one
trial's score is one draw of its seed, so the top few are trained again with several seeds,
scored as the trials were (cross-validated or on val), and picked by their mean. Each run is
kept in results/candidates.parquet as it ends, so a resumed study runs only the missing ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from orchestrator.names import METRIC
from trainables.config import TrialConfig
from trainables.datasets import DataSplits
from trainables.files import replacing
from trainables.status import TrialStatus
from trainables.train import train

Trainer = Callable[[TrialConfig, DataSplits], list[dict[str, float]]]


def train_history(config: TrialConfig, data: DataSplits) -> list[dict[str, float]]:
    result = train(config, data)
    return result.history if result.status == TrialStatus.COMPLETED else []


def score_candidates(
    configs: dict[str, TrialConfig],
    seeds: int,
    data: DataSplits,
    path: Path,
    trainer: Trainer = train_history,
) -> pd.DataFrame:
    """One row per candidate and seed (the candidate's trial id, the seed, the last epoch's
    score, error and validation loss); rows already in ``path`` are kept, not run again."""
    done = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    have = {(r["trial_id"], r["seed"]) for r in rows}
    for trial_id, config in configs.items():
        for k in range(seeds):
            seed = config.seed + k
            if (trial_id, seed) in have:
                continue
            history = trainer(config.replace(seed=seed), data)
            last = history[-1] if history else {}
            rows.append(
                {
                    "trial_id": trial_id,
                    "seed": seed,
                    METRIC: float(last.get(METRIC, math.nan)),
                    f"{METRIC}_se": float(last.get(f"{METRIC}_se", math.nan)),
                    "val_loss": float(last.get("val_loss", math.nan)),
                }
            )
            _write(pd.DataFrame(rows), path)
    return pd.DataFrame(rows)


def choose(runs: pd.DataFrame) -> pd.DataFrame:
    """Per candidate: the mean score over its seeds, their spread (standard deviation) and
    mean validation loss; best first (a diverged seed scores 0)."""
    runs = runs.assign(**{METRIC: runs[METRIC].fillna(0.0)})
    table = runs.groupby("trial_id", sort=False).agg(
        mean=(METRIC, "mean"),
        spread=(METRIC, "std"),
        val_loss=("val_loss", "mean"),
        seeds=("seed", "count"),
    )
    table["spread"] = table["spread"].fillna(0.0)
    return table.sort_values(["mean", "val_loss"], ascending=[False, True], kind="stable")


def _write(frame: pd.DataFrame, path: Path) -> None:
    with replacing(path) as tmp:
        frame.to_parquet(tmp, index=False)
