"""How runs look on the terminal: pure functions from metrics to text."""

from __future__ import annotations

from trainables.metrics import ClassificationReport


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
