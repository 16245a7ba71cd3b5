"""How runs look on the terminal: pure functions from metrics to text, and the study's console
observer that prints them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.names import WARNING
from orchestrator.search.events import StageTally, TrialInfo
from orchestrator.study.observer import StudyObserver, StudyStarted, stopped_watching
from trainables.metric_names import UPDATE_RATIO
from trainables.metrics import ClassificationReport
from trainables.status import TrialStatus

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.search.space import Param
    from orchestrator.search.stage import StageRun
    from orchestrator.study.folder import StudyFolder
    from orchestrator.study.records import FinalRecord, NarrowingRecord, SanityRecord
    from trainables.config import TrialConfig
    from trainables.epoch import EpochReport
    from trainables.sanity_report import SanityReport, SanitySettings


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], status: str) -> str:
    head = f"epoch {epoch:>{len(str(epochs))}}/{epochs}"
    if status == TrialStatus.DIVERGED:
        return (
            f"{head}  train loss {metrics['train_loss']:.4g} acc {metrics['train_acc']:.3f} | "
            f"lr {metrics['lr']:.1e} | DIVERGED"
        )
    train = f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.3f}"
    ratios = [v for k, v in metrics.items() if k.startswith(UPDATE_RATIO)]
    val = "no val split (trains on train + val)"
    if "val_loss" in metrics:
        val = f"val loss {metrics['val_loss']:.4f} acc {metrics['val_acc']:.3f}"
        if "folds" in metrics:
            val += f" +- {metrics['val_acc_se']:.3f} ({metrics['folds']:.0f} folds)"
    return (
        f"{head}  {train} | {val} | "
        f"lr {metrics['lr']:.1e} | {metrics['epoch_seconds']:.1f} s {metrics['images_per_s']:.0f} "
        f"img/s | update/weight {min(ratios):.1e}..{max(ratios):.1e}"
    )


def test_summary(report: ClassificationReport) -> str:
    names = report.class_names
    width = max(9, *(len(n) for n in names))
    total = sum(report.support)
    lines = [
        f"test accuracy {report.accuracy:.4f}  loss {report.loss:.4f}  ({total} images)",
        "",
        f"{'class':<{width}}  precision  recall     f1  support",
    ]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<{width}}  {report.precision[i]:>9.3f}  {report.recall[i]:>6.3f}  "
            f"{report.f1[i]:>5.3f}  {report.support[i]:>7d}"
        )
    cell = max(6, *(len(n) for n in names))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join(f" {n[:cell]:>{cell}}" for n in names))
    for name, row in zip(names, report.confusion, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f" {v:>{cell}d}" for v in row))
    return "\n".join(lines)


def stage_table(stage: str, trials: pd.DataFrame, params: list[str], top_k: int) -> str:
    """The stage's status counts and its top-k trials, best first."""
    from orchestrator.search.ranking import rank, score_text

    counts = trials["status"].value_counts()
    head = f"{stage:<6} {len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    top = rank(trials).head(top_k)
    if top.empty:
        return head
    columns = ["trial_id", "status", "epochs", *params, "val_acc +- se", "val_loss", "flag"]
    rows = [
        [
            row["trial_id"],
            row["status"],
            str(row["epochs_run"]),
            *(cell(row[p]) for p in params),
            score_text(row),
            f"{row['val_loss']:.4f}",
            row["flag"] or "-",
        ]
        for _, row in top.iterrows()
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [head, f"top {len(top)} by val_acc (ties within one standard error by val_loss):"]
    for cells in [columns, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def narrowing_lines(record: NarrowingRecord) -> str:
    lines = [
        f"narrow   {record.source} -> {record.into}, from the top {record.top_k} "
        f"{record.source} trials by {record.metric}:"
    ]
    for d in record.decisions:
        (kind, old), (_, new) = next(iter(d.old.items())), next(iter(d.new.items()))
        if kind == "choice":  # its reason says {old} -> {new}
            lines.append(f"  {d.name:<10} choice {d.reason}")
            continue
        lines.append(
            f"  {d.name:<10} {kind} [{old[0]:.3g}, {old[1]:.3g}] -> [{new[0]:.3g}, "
            f"{new[1]:.3g}]  {d.reason}"
        )
    if record.stop:
        lines.append(f"rounds   no {record.into} round: {record.stop}")
    return "\n".join(lines)


def sanity_table(report: SanityReport) -> str:
    """Each check: verdict, what it measured, what it expected and what a failure means; then
    the lr probe, one line per learning rate."""
    width = max(len(c.name) for c in report.checks) if report.checks else 0
    pad = " " * (width + 10)
    lines = []
    for c in report.checks:
        lines.append(f"  {c.status.upper():<4}  {c.name:<{width}}  {c.measured}")
        lines.append(f"{pad}expected {c.expected}")
        lines.append(f"{pad}{'if not' if c.status == 'pass' else 'means'}: {c.meaning}")
    if report.probes:
        lines.append(
            f"  lr probe, {len(report.probes[0].losses)} steps each (loss on a fixed sample):"
        )
        for p in report.probes:
            after = f"{p.after:.4f}" if p.after == p.after else "-"
            lines.append(
                f"    lr {p.lr:.0e}  {p.verdict:<8}  {p.before:.4f} -> {after}"
                + (f"  (stopped at step {len(p.losses)})" if p.verdict == "explodes" else "")
            )
    if report.lr_range:
        lines.append(
            f"  proposed coarse lr range: [{report.lr_range[0]:.0e}, {report.lr_range[1]:.0e}]"
        )
    return "\n".join(lines)


def progress_line(stage: str, tally: StageTally) -> str:
    counts = tally.counts
    best = f"best val_acc {tally.best:.4f}" if tally.best is not None else "best -"
    left = ""
    if 0 < tally.done < tally.total:
        left = (
            f", ~{format_seconds(tally.elapsed_s / tally.done * (tally.total - tally.done))} left"
        )
    return (
        f"{stage:<6} {tally.done:>3}/{tally.total} done | running {counts.get('running', 0)} "
        f"completed {counts.get(TrialStatus.COMPLETED, 0)} "
        f"stopped {counts.get(TrialStatus.STOPPED, 0)} "
        f"diverged {counts.get(TrialStatus.DIVERGED, 0)} "
        f"errored {counts.get(TrialStatus.ERRORED, 0)} | {best} | "
        f"{format_seconds(tally.elapsed_s)}{left}"
    )


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def cell(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class ConsoleObserver(StudyObserver):
    """A study as lines on the terminal (or a job's log)."""

    speaks = True

    def __init__(self, echo: Callable[[str], None] = print) -> None:
        self.echo = echo
        self.ran: set[str] = set()

    def study_started(self, started: StudyStarted) -> None:
        spec, plan = started.spec, started.plan
        coarse, fine = plan.stage("coarse"), plan.stage("fine")
        self.echo(
            f"study    {spec.name} (budget {'custom' if plan.custom else spec.budget}) in "
            f"{started.path}: coarse "
            f"{coarse.trials}x{coarse.epochs} ep, fine {fine.trials}x{fine.epochs} ep, final "
            f"{plan.final_epochs} ep, rounds {spec.rounds}"
            + (f" (at most {spec.max_rounds})" if spec.rounds == "auto" else "")
        )
        self.echo(
            f"study    trials score by {plan.scoring(len(started.data.val))}; "
            f"{plan.steps_per_epoch} optimizer steps per epoch, >= {spec.min_rung_steps} per "
            "ASHA rung"
        )
        for departure in plan.departures:
            self.echo(f"study    custom: {departure}")

    def sanity_started(self, settings: SanitySettings) -> None:
        self.echo(
            "sanity   checking the data, the initial loss, regularization, overfitting "
            f"{settings.overfit_examples} examples and {len(settings.probe_lrs)} learning rates"
        )

    def sanity_finished(self, record: SanityRecord, folder: StudyFolder, *, reused: bool) -> None:
        if reused:  # its time and files were said when it ran
            self.echo(f"sanity   already passed: {folder.sanity_file}")
            self.echo(sanity_table(record.report))
            return
        self.echo(sanity_table(record.report))
        self.echo(
            f"sanity   {'passed' if record.passed else 'FAILED'} in {record.report.seconds:.1f} "
            f"s; saved {folder.sanity_file} and {folder.probe_plot.name}"
        )

    def sanity_skipped(self) -> None:
        self.echo("sanity   skipped (--skip-sanity)")

    def lr_resolved(self, lr: Param) -> None:
        self.echo(f"sanity   lr: auto -> coarse lr {lr.describe()}")

    def lr_range_missed(self, lr: Param, learns: tuple[float, float], share: float) -> None:
        low, high = learns
        self.echo(
            f"warning  search_space.lr {lr.describe()} covers {share:.0%} of the range where the "
            f"lr probe saw the loss fall, [{low:.0e}, {high:.0e}]; search that range (or lr: auto)"
        )

    def range_capped(self, old: Param, new: Param, why: str) -> None:
        self.echo(f"search   {old.name} {old.describe()} -> {new.describe()}: {why}")

    def trial_epoch(self, stage: str, trial: TrialInfo, result: dict[str, Any]) -> None:
        if result.get(WARNING):
            self.echo(f"warning  {stage} trial {trial.trial_id}: {result[WARNING]}")

    def stage_started(self, run: StageRun) -> None:
        self.ran.add(run.name)
        stage = run.stage
        self.echo(
            f"{run.name:<6} {stage.trials} trials x {stage.epochs} epochs, {stage.search} search, "
            f"{stage.scheduler.type} scheduler: "
            + ", ".join(f"{p.name} {p.describe()}" for p in run.space.values())
        )

    def stage_resumed(self, stage: str, path: Path) -> None:
        self.echo(f"{stage:<6} resuming the interrupted stage from {path}")

    def stage_progress(self, stage: str, tally: StageTally) -> None:
        self.echo(progress_line(stage, tally))

    def stage_fused(self, stage: str, line: str) -> None:
        self.echo(f"{stage:<6} {line}")

    def stage_results(
        self, stage: str, trials: pd.DataFrame, searched: list[str], top_k: int, path: Path
    ) -> None:
        if stage not in self.ran:
            self.echo(f"{stage:<6} already finished: {path}")
        self.echo(stage_table(stage, trials, searched, top_k))

    def narrowing_decided(self, record: NarrowingRecord) -> None:
        self.echo(narrowing_lines(record))

    def candidates_started(self, candidates: int, seeds: int, epochs: int) -> None:
        self.echo(
            f"final  retraining the top {candidates} candidates with {seeds} seeds each "
            f"({epochs} epochs, scored as the trials were)"
        )

    def candidates_scored(self, table: pd.DataFrame, path: Path) -> None:
        self.echo(f"final  candidates by mean val_acc over seeds ({path}):")
        self.echo("  trial_id     seeds  mean    spread  val_loss")
        for trial_id, row in table.iterrows():
            self.echo(
                f"  {trial_id:<12} {int(row['seeds']):>5}  {row['mean']:.4f}  "
                f"{row['spread']:.4f}  {row['val_loss']:.4f}"
            )

    def final_started(self, config: TrialConfig, *, reused: Path | None) -> None:
        if reused is not None:
            self.echo(f"final  already trained: {reused}")
        else:
            self.echo(f"final  training the best config for {config.epochs} epochs")

    def final_epoch(self, config: TrialConfig, report: EpochReport) -> None:
        self.echo(
            "final  " + epoch_line(report.epoch, config.epochs, report.metrics, report.status)
        )

    def final_result(self, record: FinalRecord, searched: list[str]) -> None:
        chosen: dict[str, Any] = record.settings
        self.echo("chosen   " + ", ".join(f"{k}={cell(chosen[k])}" for k in searched))
        if record.test is None:
            self.echo(f"final  diverged: {record.reason}")
        else:
            self.echo(test_summary(record.test))

    def observer_failed(self, observer: str, hook: str, error: Exception) -> None:
        self.echo(stopped_watching(observer, hook, error))
