"""Named data sets (cifar10, faces, imagefolder) turned into train / val / test splits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.config import TrialConfig
from trainables.errors import DataError
from trainables.image_folder import ImageSet, read_image_set
from trainables.splits import stratified_split, stratified_subset

FACE_CLASSES = ("face", "nonface")
CIFAR10_CLASSES = 10


def default_cache_dir() -> Path:
    """Where decoded data sets are kept between runs (``XDG_CACHE_HOME`` moves it)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "babysitter"


@dataclass(frozen=True)
class Split:
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DataSplits:
    """uint8 NCHW images and the training split's per-channel statistics (0..255 units).

    Arrays stay numpy so the orchestrator can put them into Ray's object store once per study.
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[2:])

    def summary(self) -> str:
        h, w = self.image_size
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_classes} classes, {h}x{w}x{self.channels}"
        )


def load_data(config: TrialConfig, cache_dir: Path) -> DataSplits:
    """Load the images ``config`` names and split them; the test split never depends on the
    training seed, so every trial of a study is scored on the same images."""
    image_set = _read_source(config, Path(cache_dir))
    _check_classes(config, image_set)
    if image_set.has_test_split:
        trainval = np.flatnonzero(~image_set.is_test)
        test = np.flatnonzero(image_set.is_test)
    else:
        keep, take = stratified_split(image_set.labels, config.test_fraction, config.split_seed)
        trainval, test = keep, take
    keep, take = stratified_split(
        image_set.labels[trainval], config.val_fraction, config.split_seed + 1
    )
    train, val = trainval[keep], trainval[take]
    if config.train_subset is not None:
        if config.train_subset > len(train):
            raise DataError(
                f"invalid train_subset={config.train_subset}: the training split has only "
                f"{len(train)} images; pass a smaller --train-subset"
            )
        train = train[stratified_subset(image_set.labels[train], config.train_subset, 0)]
    full = Split(image_set.images, image_set.labels)
    train_split = full.take(train)
    mean, std = channel_stats(train_split.images)
    return DataSplits(
        name=config.dataset,
        train=train_split,
        val=full.take(val),
        test=full.take(test),
        class_names=image_set.class_names,
        mean=mean,
        std=std,
    )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images, exact, from each channel's 256-bin
    histogram: a float64 copy of 50k CIFAR images would cost seconds and 1 GB."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = counts @ values / total
        means.append(float(mean))
        stds.append(max(float(np.sqrt(counts @ (values - mean) ** 2 / total)), 1e-6))
    return tuple(means), tuple(stds)


def _read_source(config: TrialConfig, cache_dir: Path) -> ImageSet:
    if config.dataset == "cifar10" and _is_torchvision_root(config.data):
        root = Path(config.data) if config.data else cache_dir / "torchvision"
        return _torchvision_cifar10(root)
    if config.data is None:
        raise DataError(
            f"dataset {config.dataset!r} needs --data PATH: a folder or .tar/.tar.gz archive "
            "of class folders"
        )
    return read_image_set(Path(config.data), cache_dir)


def _is_torchvision_root(data: str | None) -> bool:
    if data is None:
        return True
    path = Path(data)
    return path.is_dir() and any(
        (path / name).exists() for name in ("cifar-10-batches-py", "cifar-10-python.tar.gz")
    )


def _torchvision_cifar10(root: Path) -> ImageSet:
    from torchvision.datasets import CIFAR10

    try:
        parts = [CIFAR10(str(root), train=train, download=True) for train in (True, False)]
    except Exception as exc:  # torchvision raises URLError, RuntimeError or OSError offline
        raise DataError(
            f"CIFAR-10 is not in {str(root)!r} and could not be downloaded ({type(exc).__name__}); "
            "pass --data with a local copy (a folder or .tar.gz of train/<class>/, test/<class>/)"
        ) from None
    images = np.concatenate([p.data for p in parts]).transpose(0, 3, 1, 2)
    labels = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    is_test = np.r_[np.zeros(len(parts[0]), bool), np.ones(len(parts[1]), bool)]
    return ImageSet(np.ascontiguousarray(images), labels, is_test, tuple(parts[0].classes))


def _check_classes(config: TrialConfig, image_set: ImageSet) -> None:
    names = image_set.class_names
    if config.dataset == "faces" and names != FACE_CLASSES:
        raise DataError(
            f"dataset 'faces' needs class folders face/ and nonface/, found {', '.join(names)}; "
            "use dataset imagefolder for other classes"
        )
    if config.dataset == "cifar10" and len(names) != CIFAR10_CLASSES:
        raise DataError(
            f"dataset 'cifar10' needs 10 class folders, found {len(names)}; "
            "use dataset imagefolder for other data sets"
        )
