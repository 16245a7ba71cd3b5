"""The command center as one self-contained HTML page: every figure embedded as a PNG, no
script, no network, so it opens from disk in any browser and can be mailed as one file."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from orchestrator.report import figures
from orchestrator.report.diagnosis import Finding
from orchestrator.report.importance import importance, rungs
from orchestrator.report.study_view import StageView, StudyView

DPI = 80
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
img{max-width:100%;display:block;margin:.5em 0}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}.pending{color:#777}
li.finding{margin:.3em 0}.ok{color:#009E73}
"""


@dataclass
class Report:
    """The page's views in order, and each figure as PNG bytes (what MLflow gets)."""

    title: str
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # id, heading, html
    images: dict[str, bytes] = field(default_factory=dict)

    def add(self, key: str, heading: str, body: str) -> None:
        self.sections.append((key, heading, body))

    def figure(self, name: str, figure: Figure | None, pending: str) -> str:
        """The figure as an <img> (and kept as ``name``.png), or why there is none yet."""
        if figure is None:
            return f'<p class="pending">{html.escape(pending)}</p>'
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
        self.images[f"{name}.png"] = buffer.getvalue()
        return _img(name, buffer.getvalue())

    def html(self) -> str:
        body = "\n".join(
            f'<section id="{key}" class="view"><h2>{html.escape(heading)}</h2>\n{content}</section>'
            for key, heading, content in self.sections
        )
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )


Section = Callable[["Report"], str]


def build(view: StudyView, findings: list[Finding], insides: Section, wrong: Section) -> Report:
    """The report of ``view``: views in the lecture's order, a note where a step has not run.
    ``insides`` and ``wrong`` draw the model's views (they need its checkpoint and data)."""
    report = Report(f"babysitter report: {view.name} ({view.budget})")
    report.add("overview", "Overview", _overview(view))
    report.add("diagnosis", "Diagnosis", _diagnosis(findings))
    report.add(
        "search-map",
        "1. Search map",
        report.figure("search_map", figures.search_map(view), "no search round has finished yet")
        + (report.figure("choices", figures.choices(view), "") if view.choices else ""),
    )
    report.add(
        "curves",
        "2. Curves and optimization history",
        report.figure("curves", figures.curves(view), "no trial has reported an epoch yet")
        + report.figure("history", figures.history(view), "no search round has finished yet"),
    )
    report.add(
        "update-ratio",
        "4. Update / weight ratio (final run)",
        report.figure(
            "update_ratio", figures.update_ratios(view), "the final model has not been trained yet"
        ),
    )
    report.add("insides", "5. The model's insides", insides(report))
    report.add("test", "6. Test report", _test(view, report) + wrong(report))
    report.add("importance", "7. What mattered", _mattered(view, report))
    report.add("sanity", "8. Sanity checks", _sanity(view))
    return report


def _overview(view: StudyView) -> str:
    rows = []
    for stage in view.stages:
        best = stage.best
        score = "-" if best is None else f"{best['score']:.4f} +- {best['score_se']:.4f}"
        rows.append((stage.name, str(len(stage.tables.trials)), score))
    lines = [_table(("round", "trials", "best val_acc +- se"), rows)]
    if view.final is not None:
        config = view.final.config
        searched = ", ".join(f"{n}={config[n]:.3g}" for n in view.searched if n in config)
        test = view.final.test
        lines.append(
            f"<p>chosen: {html.escape(searched)}; final run {html.escape(view.final.status)}"
            + (f"; test accuracy <b>{test.accuracy:.4f}</b>" if test else "")
            + "</p>"
        )
    return "\n".join(lines)


def _diagnosis(findings: list[Finding]) -> str:
    if not findings:
        return '<p class="ok">No warnings for the final run or the top trials.</p>'
    items = "".join(
        f'<li class="finding"><b>{html.escape(f.kind)}</b> ({html.escape(f.subject)}): '
        f"{html.escape(f.evidence)}. <i>{html.escape(f.advice)}</i></li>"
        for f in findings
    )
    return f"<ul>{items}</ul>"


def _test(view: StudyView, report: Report) -> str:
    test = None if view.final is None else view.final.test
    parts = [report.figure("confusion", figures.confusion(test), "no test report yet")]
    if test is not None:
        rows = [
            (name, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(n))
            for name, p, r, f, n in zip(
                test.class_names, test.precision, test.recall, test.f1, test.support, strict=True
            )
        ]
        parts.append(_table(("class", "precision", "recall", "F1", "support"), rows))
    return "\n".join(parts)


def _mattered(view: StudyView, report: Report) -> str:
    shares = {s.name: importance(s) for s in view.stages}
    parts = [
        report.figure(
            "importance",
            figures.importance_bars(shares),
            "too few scored trials for an importance estimate",
        )
    ]
    for stage in view.stages:
        rows = [(str(r.epoch), str(r.reached), str(r.stopped)) for r in rungs(stage)]
        parts.append(f"<p>{html.escape(stage.name)}: trials reaching each ASHA rung</p>")
        parts.append(_table(("epoch", "trials reaching it", "stopped there"), rows))
        parts.append(_stops(stage))
    return "\n".join(parts)


STOPS_SHOWN = 10


def _stops(stage: StageView) -> str:
    """ASHA's decisions on the stopped trials, the closest calls (highest scores) first."""
    trials = stage.tables.trials
    if "asha_rung" not in trials or not trials["asha_rung"].notna().any():
        return ""
    stopped = trials[trials["asha_rung"].notna()].sort_values("asha_score", ascending=False)
    within = stage.within if stage.within in trials else None
    rows = [
        (
            str(r["trial_id"]),
            str(int(r["asha_rung"])),
            f"{r['asha_score']:.4f}",
            f"{r['asha_cutoff']:.4f}",
            str(int(r["asha_compared"])) + (f" with {within}={r[within]}" if within else ""),
        )
        for r in stopped.head(STOPS_SHOWN).to_dict("records")
    ]
    more = len(stopped) - len(rows)
    return (
        f"<p>{html.escape(stage.name)}: why ASHA stopped {len(stopped)} trials. At a rung a "
        "trial goes on only if its val_acc reaches the cutoff, a quantile of the scores "
        "recorded there before it, so an early arrival faces few scores and a late one many"
        + (f"; each {within} value has rungs of its own" if within else "")
        + (f" (the {len(rows)} highest shown, {more} more in the trials table)" if more else "")
        + ".</p>"
        + _table(("trial", "rung (epoch)", "val_acc", "cutoff", "compared with"), rows)
    )


def _sanity(view: StudyView) -> str:
    if view.sanity is None:
        return '<p class="pending">no sanity checks recorded (skipped or not run yet)</p>'
    rows = [(c.name, c.status, c.measured, c.expected) for c in view.sanity.report.checks]
    parts = [_table(("check", "status", "measured", "expected"), rows)]
    if view.probe_plot is not None:
        parts.append(_img("lr_probe", Path(view.probe_plot).read_bytes()))
    return "\n".join(parts)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
