"""``babysit report``: read the study folder, diagnose, draw, and write one HTML file."""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.report.diagnosis import Finding, findings, trial_findings
from orchestrator.report.page import Report, build
from orchestrator.report.study_view import read_study
from orchestrator.study.folder import StudyFolder
from trainables.errors import BabysitterError
from trainables.files import write_text

if TYPE_CHECKING:
    from trainables.datasets import DataSplits

# which figures each step's MLflow run holds: the search's on a stage run, the model's on final
STAGE_FIGURES = ("search_map", "choices", "curves", "history", "importance")
FINAL_FIGURES = ("curves", "update_ratio", "filters", "fc_weights", "activations", "confusion")
FINAL_FIGURES += ("wrong",)


@dataclass(frozen=True)
class Written:
    path: Path
    report: Report
    findings: list[Finding]  # the final run's and the last round's best's
    trial_findings: list[Finding]  # the last round's top trials'


def write_report(
    study_dir: Path, out: Path | None, cache_dir: Path, data: DataSplits | None = None
) -> Written:
    """The study's report at ``out`` (default STUDY_DIR/report.html); the model's views need
    the final checkpoint and the study's data (``data``, or decoded into ``cache_dir``)."""
    view = read_study(study_dir)
    insides, insides_note = None, "the final model has not been trained yet"
    if view.final is not None and view.final.status != "errored":
        try:
            from orchestrator.report.model_views import model_views

            insides = model_views(study_dir / "final", view.final.config, cache_dir, data)
        except BabysitterError as exc:
            insides_note = f"the model's views need its data and checkpoint: {exc}"
    found = findings(view, insides.dead if insides else {})
    of_trials = trial_findings(view)

    def model_section(report: Report) -> str:
        if insides is None:
            return f'<p class="pending">{html.escape(insides_note)}</p>'
        parts = [
            report.figure("filters", insides.filters, ""),
            report.figure("fc_weights", insides.fc_weights, ""),
            report.figure("activations", insides.activations, ""),
        ]
        return "\n".join(parts)

    def wrong_section(report: Report) -> str:
        wrong = insides.wrong if insides else None
        return report.figure("wrong", wrong, "no wrong test images to show")

    report = build(view, found + of_trials, model_section, wrong_section)
    path = out if out is not None else StudyFolder(study_dir).report_file
    write_text(path, report.html())
    return Written(path, report, found, of_trials)


def save_figures(written: Written, folder: StudyFolder, step: str) -> list[Path]:
    """The figures that belong to ``step``'s run, as PNG files in the study folder, and the
    diagnosis beside them (the MLflow record tags the final run with it)."""
    names = FINAL_FIGURES if step == "final" else STAGE_FIGURES
    directory = folder.figures_dir(step)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    paths = []
    for name in names:
        png = written.report.images.get(f"{name}.png")
        if png is not None:
            paths.append(directory / f"{name}.png")
            paths[-1].write_bytes(png)
    lines = [finding.text() for finding in written.findings]
    folder.diagnosis_file(step).write_text("".join(f"{line}\n" for line in lines))
    return paths
