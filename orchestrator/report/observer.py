"""The report as a study observer: after each search round and the final run it rewrites
STUDY_DIR/report.html and that step's figures, hands them on (``then``: the MLflow record
attaches them), and at the end it prints the diagnosis."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.names import Step
from orchestrator.report.writer import Written, save_figures, write_report
from orchestrator.study.folder import StudyFolder
from orchestrator.study.observer import StudyObserver, StudyStarted

if TYPE_CHECKING:
    from orchestrator.study.records import Summary


class ReportObserver(StudyObserver):
    def __init__(
        self,
        folder: StudyFolder,
        cache_dir: Path,
        echo: Callable[[str], None],
        then: Callable[[str], None] | None = None,
    ) -> None:
        self.folder, self.cache_dir, self.echo, self.then = folder, cache_dir, echo, then
        self.data = None
        self.written: Written | None = None

    def study_started(self, started: StudyStarted) -> None:
        self.data = started.data

    def step_finished(self, step: str) -> None:
        if step == Step.SANITY:
            return
        start = time.monotonic()
        self.written = write_report(self.folder.path, None, self.cache_dir, self.data)
        save_figures(self.written, self.folder, step)
        self.echo(f"report   {self.written.path} ({time.monotonic() - start:.1f} s)")
        if self.then is not None:
            self.then(step)

    def study_finished(self, summary: Summary) -> None:
        if self.written is None:
            return
        written = self.written
        for finding in written.findings:
            self.echo(f"diagnose {finding.text()}")
        if not written.findings:
            self.echo("diagnose no warnings for the final run")
        if written.trial_findings:
            count = len(written.trial_findings)
            self.echo(f"diagnose {count} more for the top trials in {written.path}")
