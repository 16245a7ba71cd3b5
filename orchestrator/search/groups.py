"""A stage's trials drawn up front (their ids and settings, the same on every resume) and the
groups they train in: with ``resources.fuse``, trials that may fuse (``trainables.fused``) go K
to a group; the rest, and every trial of an unfused stage, train alone."""

from __future__ import annotations

import itertools
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.search.events import TrialInfo
from orchestrator.search.stage import StageRun
from trainables.config import TrialConfig
from trainables.fused import fusion_key, why_not_fused

# (a trial's config, the most members worth measuring) -> the knee's K and images/s by K
Knee = Callable[[TrialConfig, int], tuple[int, dict[int, float]]]


@dataclass(frozen=True)
class Fusion:
    """How a stage trains: ``size`` members to a group (1: unfused), and a line saying why a
    stage asked to fuse does not, or how its K was chosen."""

    size: int
    line: str = ""


def stage_trials(run: StageRun, logged: list[str]) -> list[TrialInfo]:
    """The stage's trials in order: ids with the prefix its log already uses (``logged``: the
    study folder may have moved since) or one from its folder's path."""
    prefix = next((t.rsplit("_", 1)[0] for t in logged), None)
    prefix = prefix or f"{zlib.crc32(str(run.path).encode()) & 0xFFFFF:05x}"
    return [TrialInfo(f"{prefix}_{i:05d}", p) for i, p in enumerate(samples(run))]


def samples(run: StageRun) -> Iterator[dict[str, Any]]:
    """The stage's trial settings: ``trials`` random draws (seeded by the stage), each
    crossed with every combination of the grid parameters."""
    rng = random.Random(run.seed)
    grid = {n: p.values for n, p in run.space.items() if p.kind == "grid"}
    for _ in range(run.stage.trials):
        for values in itertools.product(*grid.values()):
            drawn = {n: p.sample(rng) for n, p in run.space.items() if p.kind != "grid"}
            yield {**dict(zip(grid, values, strict=True)), **drawn}


def fused_groups(
    trials: list[TrialInfo], configs: dict[str, TrialConfig], size: int
) -> list[list[TrialInfo]]:
    """Trials with one fusion key, ``size`` at a time in their order (a key's first trial
    decides where its groups come); a trial that cannot fuse is a group of one."""
    if size < 2:
        return [[t] for t in trials]
    by_key: dict[tuple, list[TrialInfo]] = {}
    for t in trials:
        by_key.setdefault(fusion_key(configs[t.trial_id]), []).append(t)
    groups = []
    for same in by_key.values():
        alone = why_not_fused([configs[same[0].trial_id]] * 2)
        step = 1 if alone else size
        groups.extend(same[i : i + step] for i in range(0, len(same), step))
    return groups


def plan_fusion(run: StageRun, configs: list[TrialConfig], knee: Knee | None) -> Fusion:
    """The stage's group size: the spec's K; for auto, off on CPU trials and the measured
    ``knee`` on GPU trials. A stage whose trials cannot fuse says why in one line."""
    asked = run.resources.fused_size()
    if asked == 1 or (asked is None and (run.resources.gpus_per_trial == 0 or knee is None)):
        return Fusion(1)
    if run.stage.search == "optuna":
        why = "search: optuna draws each trial from the results before it (random fuses)"
        return Fusion(1, f"trains unfused: {why}")
    counts = Counter(fusion_key(c) for c in configs)
    lone = why_not_fused([configs[0]] * 2) if configs else "no trials"
    if lone or len(counts) == len(configs):
        return Fusion(1, f"trains unfused: {lone or why_not_fused(configs[:2])}")
    size, measured = asked or 0, ""
    if asked is None:
        size, figures = knee(configs[0], max(counts.values()))
        shown = ", ".join(f"K={k} {v / 1000:.0f}k" for k, v in figures.items())
        if size == 1:
            return Fusion(1, f"trains unfused: fusing did not pay here (member-images/s: {shown})")
        measured = f" (member-images/s measured: {shown})"
    groups = sum(-(-n // size) for n in counts.values())
    return Fusion(size, f"{len(configs)} trials fused in {groups} groups of up to {size}{measured}")
