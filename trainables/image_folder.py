"""Image-folder trees (a folder or a .tar/.tar.gz of one) decoded once into uint8 arrays.

Accepted layouts, under an optional single top-level folder:
``train/<class>/*`` with optional ``test/<class>/*``, or flat ``<class>/*``.
Decoded arrays are cached in ``cache_dir`` under a key made from the source: an archive's bytes,
or a folder's file names, sizes and modification times (hashing every byte of a 60,000-file
folder would cost as much as decoding it).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainables.errors import DataError
from trainables.files import replacing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
SPLIT_NAMES = ("train", "test")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_CACHE_FORMAT = "images-v2"


@dataclass(frozen=True)
class ImageSet:
    """All images of a source, NCHW uint8, with ``is_test`` marking a shipped test split.

    Grey images stored as RGB come out with one channel: the model's first layer then does a
    third of the work for the same result.
    """

    images: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def has_test_split(self) -> bool:
        return bool(self.is_test.any())


@dataclass(frozen=True)
class _Entry:
    path: PurePosixPath
    split: str
    label: str


def read_image_set(source: Path, cache_dir: Path) -> ImageSet:
    """Decode ``source`` once; later calls with unchanged content load the cached arrays."""
    source = Path(source)
    if not source.exists():
        raise DataError(
            f"data path {str(source)!r} does not exist; pass --data with a folder or a "
            ".tar/.tar.gz archive of class folders"
        )
    if not os.access(source, os.R_OK):
        raise DataError(f"data path {str(source)!r} is not readable; fix its permissions")
    key = _fingerprint(source)
    cached = Path(cache_dir) / f"{_CACHE_FORMAT}-{key}.npz"
    if cached.exists():
        return _load_cache(cached)
    image_set = _decode(source)
    _save_cache(cached, image_set)
    return image_set


def parse_layout(paths: list[PurePosixPath], source: str) -> list[_Entry]:
    """Map relative image paths to (split, class); pure, so both folders and archives use it."""
    paths = [p for p in paths if _is_image(p)]
    if not paths:
        raise DataError(
            f"data path {source!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "point --data at a folder of class folders"
        )
    depth = 0
    while (
        len({p.parts[depth] for p in paths}) == 1
        and paths[0].parts[depth] not in SPLIT_NAMES
        and min(len(p.parts) for p in paths) - depth > 2
    ):
        depth += 1
    rel = [(p, p.parts[depth:]) for p in paths]
    tops = {parts[0] for _, parts in rel if len(parts) > 1}
    if "train" in tops and tops <= set(SPLIT_NAMES):
        entries = [_Entry(p, parts[0], parts[1]) for p, parts in rel if len(parts) > 2]
    else:
        entries = [_Entry(p, "train", parts[0]) for p, parts in rel if len(parts) > 1]
    classes = sorted({e.label for e in entries if e.split == "train"})
    if len(classes) < 2:
        found = f"1 class folder ({classes[0]})" if classes else "no class folders"
        raise DataError(
            f"data path {source!r}: found {found}; an image data set needs at least two class "
            "folders, e.g. face/ and nonface/"
        )
    extra = sorted({e.label for e in entries} - set(classes))
    if extra:
        raise DataError(
            f"data path {source!r}: test class {extra[0]!r} has no train/{extra[0]}/ folder; "
            "test classes must match train classes"
        )
    return sorted(entries, key=lambda e: (e.split, e.label, str(e.path)))


def _is_image(p: PurePosixPath) -> bool:
    hidden = any(part.startswith((".", "__MACOSX")) for part in p.parts)
    return not hidden and p.suffix.lower() in IMAGE_SUFFIXES


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz"))


def _fingerprint(source: Path) -> str:
    digest = hashlib.blake2b(_CACHE_FORMAT.encode(), digest_size=16)
    if _is_archive(source):
        with source.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    elif source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), source)
                digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        raise DataError(
            f"data path {str(source)!r} is neither a folder nor a .tar/.tar.gz archive; "
            "pass one of those"
        )
    return digest.hexdigest()


def _decode(source: Path) -> ImageSet:
    if _is_archive(source):
        try:
            with tarfile.open(source) as tar:
                members = {PurePosixPath(m.name): m for m in tar.getmembers() if m.isfile()}
                entries = parse_layout(list(members), str(source))
                blobs = [(e, tar.extractfile(members[e.path]).read()) for e in entries]
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(
                f"data archive {str(source)!r} cannot be read ({exc}); re-create it with tar"
            ) from None
    else:
        rel = [PurePosixPath(p.relative_to(source).as_posix()) for p in source.rglob("*")]
        entries = parse_layout([p for p in rel if (source / p).is_file()], str(source))
        blobs = [(e, _read_file(source / e.path)) for e in entries]
    return _to_image_set([(e, _decode_one(data, f"{source}/{e.path}")) for e, data in blobs])


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"image {str(path)!r} cannot be read ({exc.strerror}); fix it or remove it"
        ) from None


def _decode_one(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DataError(f"image {name!r} is corrupt ({reason}); replace or remove it") from None
    return image.convert("L" if image.mode in _GREY_MODES else "RGB")


def _to_image_set(decoded: list[tuple[_Entry, Image.Image]]) -> ImageSet:
    size = Counter(im.size for _, im in decoded).most_common(1)[0][0]
    grey = all(im.mode == "L" for _, im in decoded)
    channels = 1 if grey else 3
    images = np.empty((len(decoded), channels, size[1], size[0]), dtype=np.uint8)
    for i, (_, im) in enumerate(decoded):
        if im.size != size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        if not grey and im.mode != "RGB":
            im = im.convert("RGB")
        array = np.asarray(im)
        images[i] = array[None] if grey else array.transpose(2, 0, 1)
    if not grey and (images[:, :1] == images[:, 1:]).all():
        images = np.ascontiguousarray(images[:, :1])
    class_names = tuple(sorted({e.label for e, _ in decoded}))
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[e.label] for e, _ in decoded], dtype=np.int64)
    is_test = np.array([e.split == "test" for e, _ in decoded], dtype=bool)
    return ImageSet(images, labels, is_test, class_names)


def _save_cache(path: Path, image_set: ImageSet) -> None:
    with replacing(path) as tmp, tmp.open("wb") as f:
        np.savez(
            f,
            images=image_set.images,
            labels=image_set.labels,
            is_test=image_set.is_test,
            class_names=np.array(image_set.class_names),
        )


def _load_cache(path: Path) -> ImageSet:
    with np.load(path, allow_pickle=False) as z:
        return ImageSet(
            images=z["images"],
            labels=z["labels"],
            is_test=z["is_test"],
            class_names=tuple(str(c) for c in z["class_names"]),
        )
