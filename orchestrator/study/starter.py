"""The spec `babysit init` writes for a folder of images: what it found there, then every key
with the recipe's default and a word on what it does, for a user to edit. A spec needs only
what differs from the defaults; this one spells them out so that nothing is hidden."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from orchestrator.study.spec import DEFAULT_COARSE, DEFAULT_FINE, DEFAULT_SPACE, Stage, StudySpec
from orchestrator.study.spec import default_name as name_for
from trainables.config import default
from trainables.image_folder import ImageSet


def found(images: ImageSet) -> list[str]:
    """What the folder holds, in words: classes, counts, image size, a shipped test split."""
    n, channels, height, width = images.images.shape
    names = images.class_names
    shown = ", ".join(names) if len(names) <= 8 else f"{', '.join(names[:6])}, ..., {names[-1]}"
    counts = Counter(images.labels[~images.is_test].tolist())
    colour = "grey" if channels == 1 else "colour"
    test = (
        f"its test/ folder ({int(images.is_test.sum()):,} images) is the test split"
        if images.has_test_split
        else f"no test/ folder: {default('test_fraction'):.0%} of each class is held out to test"
    )
    return [
        f"{len(names)} classes ({shown})",
        f"{n:,} images, {width}x{height} {colour}; {min(counts.values()):,} to "
        f"{max(counts.values()):,} images per class",
        test,
    ]


def starter_spec(data: Path, images: ImageSet) -> str:
    """The commented YAML; it parses to the recipe's defaults on ``data`` (tested)."""
    name = name_for({"data": str(data)})
    lines = [
        f"# A babysitter study of {data}, written by `babysit init`. It found:",
        *(f"#   {line}" for line in found(images)),
        f"# Run it with `babysit run {name}.yaml` (`--budget smoke` first for a quick look).",
        "# Every value below is the recipe's default: change what you need; a key you delete",
        "# keeps its default.",
        f"name: {name}",
        "trial:",
        "  dataset: imagefolder",
        f"  data: {json.dumps(str(data))}",
        f"  batch_size: {default('batch_size')}",
        f"  optimizer: {default('optimizer')}  # sgd or adam",
        f"  momentum: {default('momentum')}",
        f"  val_fraction: {default('val_fraction')}  # of the training images, to score trials",
        f"  test_fraction: {default('test_fraction')}  # held out for the final test, when "
        "there is no test/ folder",
        "search_space:  # {loguniform: [low, high]}, {uniform: [low, high]}, {choice: [...]}",
        f"  lr: {DEFAULT_SPACE['lr']}  # the sanity checks' lr probe gives the coarse range",
        f"  l2: {{loguniform: {DEFAULT_SPACE['l2']['loguniform']}}}",
        "coarse:  # random search over the whole space; ASHA stops the worst trials early",
        *_stage(DEFAULT_COARSE),
        "fine:  # the same, in the ranges narrowed around the best coarse trials",
        *_stage(DEFAULT_FINE),
        f"narrowing: {{top_k: {_default('narrowing').top_k}}}  # how many of the best trials "
        "set the next ranges",
        "final: {epochs: null}  # the winner, trained on train + val (null: fine's epochs)",
        f"cv: {_default('cv')}  # auto: 5-fold cross-validation when the validation split is "
        "small; off; K",
        f"min_rung_steps: {_default('min_rung_steps')}  # optimizer steps an ASHA rung gives "
        "a trial at least",
        f"rounds: {_default('rounds')}  # search rounds, coarse included; auto: until the "
        "ranges settle",
    ]
    return "\n".join(lines) + "\n"


def _default(key: str) -> object:
    return StudySpec.model_fields[key].get_default(call_default_factory=True)


def _stage(stage: Stage) -> list[str]:
    scheduler = stage.scheduler
    return [
        f"  trials: {stage.trials}",
        f"  epochs: {stage.epochs}",
        f"  scheduler: {{type: {scheduler.type}, grace_period: {scheduler.grace_period}, "
        f"reduction_factor: {scheduler.reduction_factor:g}}}",
    ]
