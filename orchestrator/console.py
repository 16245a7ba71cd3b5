"""How runs look on the terminal: pure functions from metrics to text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.metrics import ClassificationReport

if TYPE_CHECKING:
    import pandas as pd

    from trainables.sanity import SanityReport


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], status: str) -> str:
    head = f"epoch {epoch:>{len(str(epochs))}}/{epochs}"
    if status == "diverged":
        return (
            f"{head}  train loss {metrics['train_loss']:.4g} acc {metrics['train_acc']:.3f} | "
            f"lr {metrics['lr']:.1e} | DIVERGED"
        )
    train = f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.3f}"
    ratios = [v for k, v in metrics.items() if k.startswith("update_ratio/")]
    return (
        f"{head}  {train} | val loss {metrics['val_loss']:.4f} acc {metrics['val_acc']:.3f} | "
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
    from orchestrator.results import rank

    counts = trials["status"].value_counts()
    head = f"{stage:<6} {len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    top = rank(trials).head(top_k)
    if top.empty:
        return head
    columns = ["trial_id", "status", "epochs", *params, "val_acc"]
    rows = [
        [
            row["trial_id"],
            row["status"],
            str(row["epochs_run"]),
            *(_cell(row[p]) for p in params),
            f"{row['val_acc']:.4f}",
        ]
        for _, row in top.iterrows()
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [head, f"top {len(top)} by val_acc:"]
    for cells in [columns, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def narrowing_lines(record: dict) -> str:
    lines = [f"narrow   from the top {record['top_k']} coarse trials by {record['metric']}:"]
    for d in record["decisions"]:
        (kind, old), (_, new) = next(iter(d["old"].items())), next(iter(d["new"].items()))
        lines.append(
            f"  {d['name']:<10} {kind} [{old[0]:.3g}, {old[1]:.3g}] -> [{new[0]:.3g}, "
            f"{new[1]:.3g}]  {d['reason']}"
        )
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


def _cell(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
