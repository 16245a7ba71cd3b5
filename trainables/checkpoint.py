"""Per-epoch checkpoints: written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.errors import BabysitterError
from trainables.files import replacing

CHECKPOINT_NAME = "checkpoint.pt"
# Fields that may differ on resume: they change where and how fast a trial runs, not its math.
RESUMABLE_CHANGES = frozenset({"device", "threads"})


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with replacing(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint and refuse one written with other settings: resuming it would silently
    train a different trial."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BabysitterError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}); "
            "delete it to start over"
        ) from None
    saved = {**TrialConfig().to_dict(), **state["config"]}
    changed = sorted(  # a field added since the checkpoint was written has its default there
        k
        for k in set(config) | set(saved)
        if k not in RESUMABLE_CHANGES and config.get(k) != saved.get(k)
    )
    if changed:
        k = changed[0]
        raise BabysitterError(
            f"checkpoint {str(path)!r} was written with {k}={saved.get(k)!r}, "
            f"now {k}={config.get(k)!r}; resume with the same settings or use a new output folder"
        )
    return state


def readable(path: Path) -> bool:
    """Whether ``path`` holds a whole checkpoint: one cut short (a full disk, a copy killed
    midway) cannot be resumed, only replaced."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def checkpoint_epoch(path: Path) -> int:
    """The last completed epoch stored in ``path`` (0 when there is none)."""
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
