"""A study's sanity step: the preflight checks run once on the study's data and model, are kept
in the study folder (sanity.json and the lr-probe plot), and stop the study on a hard failure
before any search spends compute."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from orchestrator import console
from orchestrator.study_folder import StudyFolder
from orchestrator.study_spec import StudySpec
from trainables.datasets import DataSplits
from trainables.errors import BabysitterError
from trainables.sanity import EXPLODES, SanityReport, SanitySettings, decades, run_checks
from trainables.trial_state import build_model

Echo = Callable[[str], None]


def sanity_settings(spec: StudySpec) -> SanitySettings:
    """The default checks, probing every decade from 1e-7 to 10 and the spec's lr range."""
    low, high = 1e-7, 10.0
    if not spec.lr_auto and "lr" in spec.search_space:
        lr = spec.space()["lr"]
        if lr.numeric:
            low, high = min(low, lr.range().low), max(high, lr.range().high)
    return SanitySettings(probe_lrs=decades(low, high))


def run_sanity(
    folder: StudyFolder,
    spec: StudySpec,
    data: DataSplits,
    echo: Echo,
    *,
    build: Callable = build_model,
) -> SanityReport:
    """Run the checks unless they passed before; raise on a hard failure. A failed result is
    saved for reading but run again next time: the setup was probably fixed meanwhile."""
    saved = folder.read_sanity()
    if saved is not None and saved["passed"]:
        echo(f"sanity   already passed: {folder.sanity_file}")
        report = SanityReport.from_dict(saved)
    else:
        settings = sanity_settings(spec)
        echo(
            "sanity   checking the data, the initial loss, regularization, overfitting "
            f"{settings.overfit_examples} examples and {len(settings.probe_lrs)} learning rates"
        )
        report = run_checks(spec.base_config(), data, settings, build)
        record = {
            **report.to_dict(),
            "settings": dataclasses.asdict(settings),
            "finished_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        tmp = folder.sanity_file.with_name(".sanity.json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(folder.sanity_file)
        plot_probe(report, folder.probe_plot)
        recorded = folder.read_state().get("recorded", [])
        folder.write_state(recorded=[step for step in recorded if step != "sanity"])
    echo(console.sanity_table(report))
    echo(
        f"sanity   {'passed' if report.passed else 'FAILED'} in {report.seconds:.1f} s; saved "
        f"{folder.sanity_file} and {folder.probe_plot.name}"
    )
    if not report.passed:
        failed = ", ".join(c.name for c in report.checks if c.failed)
        raise BabysitterError(
            f"sanity checks failed: {failed} (see above and {folder.sanity_file}); fix the "
            "setup, or pass --skip-sanity to search anyway"
        )
    return report


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
