"""The sanity checks on the real faces data: each planted bug is caught by the check meant to
catch it, and a healthy setup passes every check."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from trainables.datasets import Split
from trainables.sanity import run_checks
from trainables.sanity_report import (
    CHECKS,
    EXPLODES,
    FAIL,
    LEARNS,
    PASS,
    TOO_LOW,
    WARN,
    Probe,
    SanityReport,
    SanitySettings,
)
from trainables.sanity_verdicts import decades, propose_range
from trainables.trial_state import build_model

QUICK = SanitySettings(probe_lrs=(1e-6, 1e-4, 1e-2, 1.0), probe_steps=40, overfit_steps=150)


def only(*checks: str) -> SanitySettings:
    return dataclasses.replace(QUICK, checks=checks)


def statuses(report: SanityReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


@pytest.fixture(scope="module")
def healthy(faces):
    """The faces splits without the 5 val/test images CBCL also has in train."""
    seen = {image.tobytes() for image in faces.train.images}

    def unshared(split: Split) -> Split:
        return split.take(np.array([i.tobytes() not in seen for i in split.images]))

    return dataclasses.replace(faces, val=unshared(faces.val), test=unshared(faces.test))


@pytest.mark.slow
def test_a_healthy_setup_passes_every_check_and_proposes_an_lr_range(faces_config, healthy):
    report = run_checks(faces_config, healthy, QUICK)
    assert statuses(report) == dict.fromkeys(CHECKS, PASS), report.checks
    assert report.passed
    assert report.check("initial_loss").values["loss"] == pytest.approx(math.log(2), abs=0.1)
    assert report.lr_range == (1e-4, 1e-2)
    verdicts = [p.verdict for p in report.probes]
    assert verdicts == [TOO_LOW, LEARNS, LEARNS, EXPLODES]
    again = SanityReport.from_dict(report.to_dict())
    assert again == report


def test_the_real_faces_data_warns_of_images_shared_between_splits(faces_config, faces):
    report = run_checks(faces_config, faces, only("data"))
    data = report.check("data")
    assert data.status == WARN and data.values["shared_images"] == 5
    assert "inflate the scores" in data.meaning
    assert report.passed  # a warning is not a failure


def test_unnormalized_data_warns_in_the_data_check(faces_config, healthy):
    raw = dataclasses.replace(healthy, mean=(0.0,), std=(1.0,))
    data = run_checks(faces_config, raw, only("data")).check("data")
    assert data.status == WARN
    assert data.values["mean_0"] > 50 and "not zero-centered" in data.meaning


def loud_logits(config, data):
    model = build_model(config, data)
    with torch.no_grad():
        model.classifier[-1].weight.mul_(1000)
    return model


def test_logits_scaled_by_1000_fail_the_initial_loss_check(faces_config, healthy):
    report = run_checks(faces_config, healthy, only("initial_loss"), build=loud_logits)
    check = report.check("initial_loss")
    assert check.status == FAIL and check.hard and not report.passed
    assert check.values["loss"] > 10 * math.log(2)


def frozen(config, data):
    model = build_model(config, data)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


@pytest.mark.slow
def test_a_frozen_model_fails_overfit_and_the_lr_probe_finds_nothing_learns(faces_config, healthy):
    report = run_checks(
        faces_config, healthy, only("overfit", "lr_probe", "update_ratio"), build=frozen
    )
    assert statuses(report) == {"overfit": FAIL, "lr_probe": FAIL, "update_ratio": WARN}
    assert {p.verdict for p in report.probes} == {TOO_LOW}
    assert report.lr_range is None and not report.passed
    assert report.check("overfit").values["accuracy"] < 1


@pytest.mark.slow
def test_shuffled_labels_leave_validation_at_chance(faces_config, healthy):
    rng = np.random.default_rng(1)
    labels = rng.permutation(healthy.train.labels)
    shuffled = dataclasses.replace(healthy, train=Split(healthy.train.images, labels))
    report = run_checks(faces_config, shuffled, only("overfit", "beats_chance"))
    check = report.check("beats_chance")
    assert check.status == FAIL and not report.passed
    assert check.values["val_acc"] < check.values["needed"]


def test_the_proposed_range_spans_the_learning_rates_that_learn_two_decades_at_least():
    def probes(*verdicts: str) -> list[Probe]:
        lrs = decades(1e-5, 1.0)
        return [Probe(lr, v, [], 1.0, 0.5, {}) for lr, v in zip(lrs, verdicts, strict=True)]

    assert decades(1e-7, 10.0) == tuple(10.0**k for k in range(-7, 2))
    assert propose_range(probes(TOO_LOW, LEARNS, LEARNS, LEARNS, LEARNS, EXPLODES)) == (
        1e-4,
        1e-1,
    )
    assert propose_range(probes(TOO_LOW, TOO_LOW, TOO_LOW, LEARNS, EXPLODES, EXPLODES)) == (
        pytest.approx(1e-4),
        1e-2,
    )
    assert propose_range(probes(*[TOO_LOW] * 5, EXPLODES)) is None
