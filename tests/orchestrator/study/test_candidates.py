import pandas as pd
import pytest

from orchestrator.study.candidates import choose, score_candidates
from trainables.config import TrialConfig


def planted(scores):
    """A trainer whose last epoch scores ``scores[(lr, seed)]``; it records what it ran."""
    ran = []

    def trainer(config, data):
        ran.append((config.lr, config.seed))
        acc = scores[(config.lr, config.seed)]
        return [{"val_acc": acc, "val_acc_se": 0.05, "val_loss": 1 - acc}]

    return trainer, ran


def test_the_candidate_with_the_best_mean_over_seeds_wins_and_reports_its_spread(tmp_path):
    """a's single best seed (0.95) is luck: its mean loses to b's steady 0.90."""
    configs = {"a": TrialConfig(lr=0.1), "b": TrialConfig(lr=0.01)}
    scores = {(0.1, 0): 0.95, (0.1, 1): 0.75, (0.01, 0): 0.90, (0.01, 1): 0.90}
    trainer, ran = planted(scores)
    path = tmp_path / "candidates.parquet"
    runs = score_candidates(configs, 2, None, path, trainer)
    assert len(runs) == 4 and sorted(ran) == sorted(scores)
    table = choose(runs)
    assert list(table.index) == ["b", "a"]
    assert table.loc["a", "mean"] == pytest.approx(0.85)
    assert table.loc["a", "spread"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc["b", "spread"] == 0.0 and (table["seeds"] == 2).all()


def test_a_resumed_choice_runs_only_the_missing_seeds(tmp_path):
    configs = {"a": TrialConfig(lr=0.1)}
    path = tmp_path / "candidates.parquet"
    trainer, ran = planted({(0.1, 0): 0.8, (0.1, 1): 0.7, (0.1, 2): 0.9})
    score_candidates(configs, 2, None, path, trainer)
    runs = score_candidates(configs, 3, None, path, trainer)
    assert ran == [(0.1, 0), (0.1, 1), (0.1, 2)]
    assert pd.read_parquet(path).equals(runs) and len(runs) == 3
