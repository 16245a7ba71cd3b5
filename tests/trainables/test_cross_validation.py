import numpy as np
import pytest

from tests.trainables.test_train import strip_timing
from trainables.config import TrialConfig
from trainables.cross_validation import fold_indices, fold_splits, merged
from trainables.datasets import load_data
from trainables.status import TrialStatus
from trainables.train import train


@pytest.fixture(scope="module")
def tiny(tiny_faces, cache_dir):
    config = TrialConfig(
        dataset="faces", data=str(tiny_faces), threads=1, batch_size=32, lr=0.02, cv_folds=3
    )
    return config, load_data(config, cache_dir)


def test_folds_are_disjoint_stratified_and_cover_every_image():
    labels = np.array([0] * 30 + [1] * 60)
    folds = fold_indices(labels, 5, seed=7)
    joined = np.concatenate(folds)
    assert sorted(joined) == list(range(90))
    assert [int((labels[f] == 0).sum()) for f in folds] == [6] * 5
    assert [len(f) for f in folds] == [18] * 5
    assert all((a == b).all() for a, b in zip(folds, fold_indices(labels, 5, 7), strict=True))


def test_each_fold_trains_on_the_rest_of_train_and_val_and_never_sees_the_test_split(tiny):
    config, data = tiny
    parts = fold_splits(data, 3, seed=config.split_seed)
    pool = len(data.train) + len(data.val)
    assert [len(p.train) + len(p.val) for p in parts] == [pool] * 3
    assert sum(len(p.val) for p in parts) == pool
    assert all(len(p.test) == 0 for p in parts)
    final = merged(data)
    assert (len(final.train), len(final.val), len(final.test)) == (pool, 0, len(data.test))


def test_a_cross_validated_trial_reports_k_folds_per_epoch(tiny):
    config, data = tiny
    reports = []
    result = train(config.replace(epochs=2), data, on_epoch=reports.append)
    assert result.status == TrialStatus.COMPLETED
    assert [(r.epoch, r.status) for r in reports] == [(1, "running"), (2, "completed")]
    last = reports[-1].metrics
    folds = [last[f"fold{i}/val_acc"] for i in range(3)]
    assert last["folds"] == 3 and "fold3/val_acc" not in last
    sizes = [len(p.val) for p in fold_splits(data, 3, config.split_seed)]
    assert last["val_acc"] == pytest.approx(np.average(folds, weights=sizes))
    assert last["val_acc_se"] >= np.std(folds, ddof=1) / np.sqrt(3) - 1e-12
    assert last["val_loss_initial"] == pytest.approx(np.log(2), abs=0.1)


def test_a_cross_validated_trial_resumes_exactly_from_its_checkpoint(tiny, tmp_path):
    config, data = tiny
    config = config.replace(epochs=3)
    whole = train(config, data)
    checkpoint = tmp_path / "checkpoint.pt"

    def crash(report):
        if report.epoch == 2:
            raise RuntimeError("planted crash")

    with pytest.raises(RuntimeError, match="planted crash"):
        train(config, data, on_epoch=crash, checkpoint_path=checkpoint)
    resumed = []
    train(config, data, on_epoch=resumed.append, checkpoint_path=checkpoint, resume=True)
    assert [r.epoch for r in resumed] == [3]
    assert strip_timing([resumed[-1].metrics]) == strip_timing(whole.history[-1:])


def test_a_diverging_fold_stops_the_trial(tiny):
    config, data = tiny
    result = train(config.replace(lr=1e5, epochs=3), data)
    assert result.status == TrialStatus.DIVERGED and result.reason.startswith("fold 0: loss")
