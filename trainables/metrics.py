"""Classification metrics from labels and predictions: pure numpy, no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ClassificationReport:
    accuracy: float
    loss: float
    confusion: list[list[int]]
    class_names: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def classification_report(
    labels: np.ndarray, predictions: np.ndarray, class_names: tuple[str, ...], loss: float
) -> ClassificationReport:
    """Confusion matrix (rows: true class, columns: predicted) and per-class P/R/F1; a class
    that is never predicted gets precision 0 rather than a division warning."""
    k = len(class_names)
    confusion = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return ClassificationReport(
        accuracy=float(tp.sum() / max(len(labels), 1)),
        loss=float(loss),
        confusion=confusion.tolist(),
        class_names=list(class_names),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=actual.tolist(),
    )
