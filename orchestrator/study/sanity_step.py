"""A study's sanity step: the preflight checks run once on the study's data and model, kept in
the study folder (sanity.json and the lr-probe plot) before any search spends compute."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.names import Step
from orchestrator.study.folder import StudyFolder
from orchestrator.study.observer import StudyObserver
from orchestrator.study.records import SanityRecord
from orchestrator.study.spec import StudySpec
from trainables.datasets import DataSplits
from trainables.sanity import run_checks
from trainables.sanity_report import EXPLODES, SanityReport, SanitySettings
from trainables.sanity_verdicts import decades
from trainables.trial_state import build_model


def sanity_settings(spec: StudySpec) -> SanitySettings:
    """The spec's checks, probing every decade from 1e-7 to 10 and the spec's lr range."""
    low, high = 1e-7, 10.0
    if not spec.lr_auto and "lr" in spec.search_space:
        lr = spec.space()["lr"]
        if lr.numeric:
            low, high = min(low, lr.range().low), max(high, lr.range().high)
    return SanitySettings(probe_lrs=decades(low, high), **spec.sanity.model_dump())


def run_sanity(
    folder: StudyFolder,
    spec: StudySpec,
    data: DataSplits,
    events: StudyObserver,
    *,
    build: Callable = build_model,
) -> SanityRecord:
    """Run the checks unless they passed before. A failed result is saved for reading but run
    again next time: the setup was probably fixed meanwhile."""
    saved = folder.read_sanity()
    if saved is not None and saved.passed:
        events.sanity_finished(saved, folder, reused=True)
        return saved
    settings = sanity_settings(spec)
    events.sanity_started(settings)
    report = run_checks(spec.base_config(), data, settings, build)
    record = SanityRecord(
        report,
        dataclasses.asdict(settings),
        datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    folder.write_sanity(record)
    plot_probe(report, folder.probe_plot)
    state = folder.read_state()
    folder.update_state(recorded=tuple(s for s in state.recorded if s != Step.SANITY))
    events.sanity_finished(record, folder, reused=False)
    return record


def plot_probe(report: SanityReport, path: Path) -> None:
    """Batch loss against step for each probed learning rate, log scale: the lecture's plots
    of "loss barely changing" and "loss exploding" in one picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for probe in report.probes:
        steps = [i for i, v in enumerate(probe.losses) if v == v and v < float("inf")]
        style = ":" if probe.verdict == EXPLODES else "-"
        axes.plot(
            steps,
            [probe.losses[i] for i in steps],
            style,
            label=f"lr {probe.lr:.0e} ({probe.verdict})",
        )
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (batch)")
    if report.lr_range:
        low, high = report.lr_range
        axes.set_title(f"lr probe: proposed coarse range [{low:.0e}, {high:.0e}]")
    else:
        axes.set_title("lr probe: no learning rate learns")
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
