"""`babysit summary`: the study in words on the terminal, from its records alone (no image is
decoded, no model is run): what each round found, how the ranges moved, the choice, the test
report and the diagnosis."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

from orchestrator.console import narrowing_lines, stage_table, test_summary
from orchestrator.names import Step
from orchestrator.report.diagnosis import findings, trial_findings
from orchestrator.report.study_view import read_study
from orchestrator.study.folder import StudyFolder


def size_mb(path: Path) -> float:
    """What the folder takes on disk (a hard-linked file counted once)."""
    seen: dict[tuple[int, int], int] = {}
    for file in path.rglob("*"):
        with contextlib.suppress(OSError):
            info = file.lstat()
            if stat.S_ISREG(info.st_mode):
                seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values()) / 2**20


def digest(path: Path) -> str:
    view = read_study(path)
    folder = StudyFolder(path)
    done = folder.finished()
    lines = [
        f"study    {view.name} (budget {view.budget}) in {path}: "
        f"{', '.join(done) if done else 'nothing'} finished; {size_mb(path):.1f} MB on disk"
    ]
    if view.sanity is not None:
        verdict = "passed" if view.sanity.passed else "FAILED"
        learns = view.sanity.lr_range
        lines.append(
            f"sanity   {verdict}"
            + (f"; the lr probe proposed [{learns[0]:.0e}, {learns[1]:.0e}]" if learns else "")
        )
    narrowed = {n.source: n for n in view.narrowings}
    for stage in view.stages:
        lines.append(stage_table(stage.name, stage.tables.trials, list(stage.space), view.top_k))
        if stage.name in narrowed:
            lines.append(narrowing_lines(narrowed[stage.name]))
    final = view.final
    if final is not None:
        chosen = ", ".join(f"{n}={final.settings[n]:.3g}" for n in view.searched)
        lines.append(f"chosen   {chosen}")
        lines.append(test_summary(final.test) if final.test else f"final  {final.status}")
    recorded = folder.read_diagnosis(Step.FINAL)  # the report's: dead ReLUs need the model
    found = recorded if recorded is not None else [f.text() for f in findings(view, {})]
    found += [f.text() for f in trial_findings(view)]
    lines += [f"diagnose {text}" for text in found]
    if final is not None and not found:
        lines.append("diagnose no warnings for the final run or the top trials")
    if folder.report_file.exists():
        lines.append(f"report   {folder.report_file}")
    return "\n".join(lines)
