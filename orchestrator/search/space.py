"""Search spaces: how each hyperparameter is sampled, and the numeric ranges that narrowing
moves between the coarse and the fine stage."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.errors import ConfigError

NUMERIC_KINDS = ("loguniform", "uniform", "int", "logint")
KINDS = (*NUMERIC_KINDS, "choice", "grid")


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

    def coverage(self, low: float, high: float) -> float:
        """The share of ``[low, high]`` that this range covers, measured in its own units
        (decades for a log range): 1.0 when it holds all of it, 0.0 when they do not meet."""
        lo, hi = self.to_unit(low), self.to_unit(high)
        if hi <= lo:
            return 1.0 if self.low <= low <= self.high else 0.0
        inside = min(hi, self.to_unit(self.high)) - max(lo, self.to_unit(self.low))
        return max(0.0, inside) / (hi - lo)


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter, written in a study spec as ``{kind: [arguments]}``:
    ``{loguniform: [1e-6, 1e-3]}``, ``{int: [32, 128]}``, ``{choice: [sgd, adam]}``."""

    name: str
    kind: str
    values: tuple[Any, ...]

    @classmethod
    def parse(cls, name: str, raw: Any) -> Param:
        if not isinstance(raw, Mapping) or len(raw) != 1:
            raise ConfigError(
                f"search_space.{name}={raw!r}: write one {{kind: [arguments]}} mapping, "
                f"kind one of {', '.join(KINDS)}, e.g. {{loguniform: [1e-6, 1e-3]}}"
            )
        ((kind, args),) = raw.items()
        if kind not in KINDS:
            raise ConfigError(
                f"search_space.{name}: unknown kind {kind!r}; use one of {', '.join(KINDS)}"
            )
        if not isinstance(args, list | tuple) or not args:
            raise ConfigError(f"search_space.{name}.{kind}={args!r}: needs a non-empty list")
        if kind in NUMERIC_KINDS:
            return cls._numeric(name, kind, args)
        return cls(name, kind, tuple(args))

    @classmethod
    def _numeric(cls, name: str, kind: str, args: list | tuple) -> Param:
        if len(args) != 2:
            raise ConfigError(f"search_space.{name}.{kind}={list(args)!r}: needs [low, high]")
        try:
            low, high = (float(a) for a in args)
        except (TypeError, ValueError):
            raise ConfigError(
                f"search_space.{name}.{kind}={list(args)!r}: low and high must be numbers"
            ) from None
        if kind in ("int", "logint"):
            if low != int(low) or high != int(high):
                raise ConfigError(
                    f"search_space.{name}.{kind}={list(args)!r}: low and high must be integers"
                )
            low, high = int(low), int(high)
        param = cls(name, kind, (low, high))
        param.range()  # validates low < high (and low > 0 on a log scale)
        return param

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS

    def range(self) -> Range:
        if not self.numeric:
            raise ConfigError(f"search_space.{self.name} is a {self.kind}, not a numeric range")
        return Range(
            self.name, self.values[0], self.values[1], self.kind in ("loguniform", "logint")
        )

    def with_range(self, new: Range) -> Param:
        """This parameter searched over ``new`` instead (integers stay integers)."""
        if self.kind in ("int", "logint"):
            low, high = math.floor(new.low), math.ceil(new.high)
            low = max(low, 1) if self.kind == "logint" else low
            return Param(self.name, self.kind, (low, max(high, low + 1)))
        return Param(self.name, self.kind, (new.low, new.high))

    def to_spec(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    def to_tune(self) -> Any:
        from ray import tune

        low, high = self.values[0], self.values[-1]
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "int":
            return tune.randint(low, high + 1)
        if self.kind == "logint":
            return tune.lograndint(low, high + 1)
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return tune.grid_search(list(self.values))

    def sample(self, rng: random.Random) -> Any:
        """One value, drawn as Tune draws it (``grid`` parameters are expanded, not drawn)."""
        low, high = self.values[0], self.values[-1]
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if self.kind == "uniform":
            return rng.uniform(low, high)
        if self.kind == "int":
            return rng.randint(low, high)
        if self.kind == "logint":
            return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))
        return rng.choice(list(self.values))

    def describe(self) -> str:
        if self.numeric:
            return f"{self.kind}[{self.values[0]:.3g}, {self.values[1]:.3g}]"
        return f"{self.kind}{list(self.values)}"


def parse_space(raw: Mapping[str, Any]) -> dict[str, Param]:
    return {name: Param.parse(name, value) for name, value in raw.items()}
