from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_image_tree
from trainables.config import TrialConfig
from trainables.datasets import load_data
from trainables.errors import DataError


def test_faces_split_is_stratified_and_disjoint(faces):
    assert (len(faces.train), len(faces.val), len(faces.test)) == (5023, 558, 1396)
    for split in (faces.train, faces.val, faces.test):
        share = np.bincount(split.labels)[0] / len(split)
        assert abs(share - 2429 / 6977) < 0.01
    assert faces.channels == 1 and faces.image_size == (24, 24)


def test_split_ignores_the_training_seed(faces_config, faces, cache_dir):
    other = load_data(faces_config.replace(seed=7), cache_dir)
    assert (other.test.images == faces.test.images).all()
    assert (other.val.labels == faces.val.labels).all()


def test_statistics_come_from_the_training_split_only(faces):
    x = faces.train.images.astype(np.float64)
    assert faces.mean[0] == pytest.approx(x.mean())
    assert faces.std[0] == pytest.approx(x.std())
    assert faces.mean[0] != pytest.approx(faces.test.images.mean(), abs=1e-3)


def test_train_subset_is_stratified(faces_config, cache_dir):
    data = load_data(faces_config.replace(train_subset=200), cache_dir)
    assert len(data.train) == 200
    assert abs(np.bincount(data.train.labels)[0] - 200 * 2429 / 6977) <= 1
    with pytest.raises(DataError, match="train_subset=9999: the training split has only 5023"):
        load_data(faces_config.replace(train_subset=9999), cache_dir)


def test_cifar10_archive_keeps_its_test_split(cifar10):
    assert (len(cifar10.train), len(cifar10.val), len(cifar10.test)) == (45000, 5000, 10000)
    assert cifar10.class_names[0] == "airplane" and cifar10.num_classes == 10
    assert np.bincount(cifar10.test.labels).tolist() == [1000] * 10
    assert cifar10.channels == 3 and cifar10.image_size == (32, 32)


def test_dataset_names_check_their_classes(tmp_path: Path, cache_dir):
    tree = write_image_tree(tmp_path / "pets", {"cat": 4, "dog": 4})
    with pytest.raises(DataError, match="'faces' needs class folders face/ and nonface/"):
        load_data(TrialConfig(dataset="faces", data=str(tree)), cache_dir)
    with pytest.raises(DataError, match="'cifar10' needs 10 class folders, found 2"):
        load_data(TrialConfig(dataset="cifar10", data=str(tree)), cache_dir)
    data = load_data(
        TrialConfig(dataset="imagefolder", data=str(tree), val_fraction=0.25), cache_dir
    )
    assert (
        data.class_names == ("cat", "dog") and len(data.train) + len(data.val) + len(data.test) == 8
    )


def test_faces_without_data_path_says_what_to_pass(cache_dir):
    with pytest.raises(DataError, match="needs --data PATH"):
        load_data(TrialConfig(dataset="faces"), cache_dir)


def test_cifar10_offline_without_a_copy_says_to_pass_data(tmp_path: Path):
    empty = tmp_path / "tv"
    (empty / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match=r"could not be downloaded .*pass --data with a local copy"):
        load_data(TrialConfig(dataset="cifar10", data=str(empty)), tmp_path)
