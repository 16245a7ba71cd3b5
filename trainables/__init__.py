"""Everything one trial needs: data, the seed CNN, the training loop and its test report.

Nothing here imports Ray or MLflow; the orchestrator adapts ``train`` to them. Names load on
first use, so ``babysit --help`` does not pay for importing torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BabysitterError": "trainables.errors",
    "ConfigError": "trainables.errors",
    "DataError": "trainables.errors",
    "TrialConfig": "trainables.config",
    "DataSplits": "trainables.datasets",
    "load_data": "trainables.datasets",
    "EpochReport": "trainables.epoch",
    "TrainResult": "trainables.epoch",
    "evaluate_on_test": "trainables.evaluation",
    "train": "trainables.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
