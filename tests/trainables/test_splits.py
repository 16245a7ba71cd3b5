import numpy as np

from trainables.splits import stratified_split, stratified_subset


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.array([0] * 700 + [1] * 300)
    keep, take = stratified_split(labels, 0.2, seed=3)
    assert len(take) == 200 and len(keep) == 800
    assert np.bincount(labels[take]).tolist() == [140, 60]
    assert set(keep).isdisjoint(take) and len(set(keep) | set(take)) == 1000
    _, again_take = stratified_split(labels, 0.2, seed=3)
    assert (again_take == take).all()
    assert not (stratified_split(labels, 0.2, seed=4)[1] == take).all()


def test_stratified_split_never_empties_a_class():
    labels = np.array([0] * 10 + [1])
    keep, _ = stratified_split(labels, 0.5, seed=0)
    assert 1 in labels[keep]


def test_stratified_subset_has_the_requested_size_and_proportions():
    labels = np.array([0] * 500 + [1] * 250 + [2] * 250)
    subset = stratified_subset(labels, 101, seed=0)
    assert len(subset) == len(set(subset)) == 101
    counts = np.bincount(labels[subset])
    assert counts.sum() == 101 and abs(counts[0] - 50.5) <= 1 and abs(counts[1] - 25.25) <= 1
