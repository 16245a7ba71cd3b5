"""Numeric search ranges, linear or log-scaled; the coarse and fine stages sample from them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainables.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """``[low, high]`` for one hyperparameter; ``log`` ranges are searched in log10 space."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(
                f"invalid range for {self.name}: low={self.low!r}, high={self.high!r}; "
                "need finite low < high"
            )
        if self.log and self.low <= 0:
            raise ConfigError(
                f"invalid range for {self.name}: low={self.low!r}; a log range needs low > 0"
            )

    def to_unit(self, value: float) -> float:
        """Position of ``value`` in the searched space (log10 for log ranges)."""
        return math.log10(value) if self.log else value

    def from_unit(self, value: float) -> float:
        return 10**value if self.log else value

    @property
    def span(self) -> float:
        return self.to_unit(self.high) - self.to_unit(self.low)
