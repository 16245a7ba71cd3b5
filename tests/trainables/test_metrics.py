import numpy as np
import pytest

from trainables.metrics import classification_report


def test_report_from_a_known_confusion():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1])
    report = classification_report(labels, predicted, ("a", "b", "c"), loss=0.5)
    assert report.confusion == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.precision == pytest.approx([1.0, 0.5, 0.0])
    assert report.recall == pytest.approx([2 / 3, 1.0, 0.0])
    assert report.f1 == pytest.approx([0.8, 2 / 3, 0.0])
    assert report.support == [3, 2, 1]
