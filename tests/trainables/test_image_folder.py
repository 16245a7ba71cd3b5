import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from tests.conftest import FACES, write_image_tree
from trainables.errors import DataError
from trainables.image_folder import parse_layout, read_image_set


def paths(*names: str) -> list[PurePosixPath]:
    return [PurePosixPath(n) for n in names]


def test_layout_flat_split_and_single_top_folder():
    flat = parse_layout(paths("cat/1.png", "dog/2.jpg", "notes.txt"), "src")
    assert [(e.split, e.label) for e in flat] == [("train", "cat"), ("train", "dog")]
    nested = parse_layout(
        paths("top/train/cat/1.png", "top/train/dog/2.jpg", "top/test/cat/3.png"), "src"
    )
    assert [(e.split, e.label) for e in nested] == [
        ("test", "cat"),
        ("train", "cat"),
        ("train", "dog"),
    ]
    assert nested[0].path == PurePosixPath("top/test/cat/3.png")


def test_layout_ignores_hidden_files():
    entries = parse_layout(paths("a/1.png", "b/2.png", "a/.x.png", "__MACOSX/a/1.png"), "src")
    assert len(entries) == 2


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("cat/1.png", "cat/2.png"), "found 1 class folder (cat)"),
        (("1.png", "2.png"), "found no class folders"),
        (("readme.txt",), "holds no images"),
        (("train/cat/1.png", "train/dog/1.png", "test/cow/1.png"), "test class 'cow'"),
    ],
)
def test_layout_errors(names, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_layout(paths(*names), "src")


def test_folder_and_archive_decode_to_the_same_arrays(tmp_path: Path):
    tree = write_image_tree(tmp_path / "tree" / "pets", {"cat": 3, "dog": 2})
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="pets")
    from_folder = read_image_set(tree, tmp_path / "cache")
    from_archive = read_image_set(archive, tmp_path / "cache")
    assert from_folder.class_names == from_archive.class_names == ("cat", "dog")
    assert from_folder.images.shape == (5, 3, 10, 12)
    assert (from_folder.images == from_archive.images).all()
    assert from_folder.labels.tolist() == [0, 0, 0, 1, 1]
    assert not from_folder.has_test_split


def test_mixed_sizes_are_resized_to_the_most_common_and_grey_stays_one_channel(tmp_path: Path):
    write_image_tree(tmp_path / "d", {"a": 3, "b": 2}, size=(16, 16), mode="L")
    write_image_tree(tmp_path / "d", {"c": 1}, size=(20, 8), mode="L")
    image_set = read_image_set(tmp_path / "d", tmp_path / "cache")
    assert image_set.images.shape == (6, 1, 16, 16)


def test_cache_is_keyed_by_content(tmp_path: Path):
    tree = write_image_tree(tmp_path / "d", {"a": 2, "b": 2})
    cache = tmp_path / "cache"
    first = read_image_set(tree, cache)
    assert len(list(cache.glob("*.npz"))) == 1
    assert (read_image_set(tree, cache).images == first.images).all()
    assert len(list(cache.glob("*.npz"))) == 1
    write_image_tree(tree, {"b": 3})
    assert len(read_image_set(tree, cache).labels) == 5
    assert len(list(cache.glob("*.npz"))) == 2


def test_cbcl_faces_archive_is_grey_and_complete(cache_dir: Path):
    image_set = read_image_set(FACES, cache_dir)
    assert image_set.class_names == ("face", "nonface")
    assert image_set.images.shape == (2429 + 4548, 1, 24, 24)
    assert np.bincount(image_set.labels).tolist() == [2429, 4548]


def test_corrupt_image_is_named(tmp_path: Path):
    tree = write_image_tree(tmp_path / "d", {"a": 2, "b": 2})
    (tree / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"image '.*b/broken.png' is corrupt"):
        read_image_set(tree, tmp_path / "cache")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p / "empty", "holds no images"),
        (lambda p: p / "file.txt", "neither a folder nor a .tar/.tar.gz archive"),
        (lambda p: p / "cut.tar.gz", "cannot be read"),
    ],
)
def test_unusable_data_paths(tmp_path: Path, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("hello")
    tree = write_image_tree(tmp_path / "tree", {"a": 20, "b": 20})
    with tarfile.open(tmp_path / "full.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="tree")
    blob = (tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=message):
        read_image_set(make(tmp_path), tmp_path / "cache")


def test_an_archive_whose_members_climb_out_is_read_in_place(tmp_path):
    """Members named ../../x and /x are read from the archive, never extracted: nothing lands
    outside the cache folder."""
    tree = write_image_tree(tmp_path / "tree", {"cat": 3, "dog": 3}, size=(8, 8))
    archive = tmp_path / "climb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i, path in enumerate(sorted(tree.rglob("*.png"))):
            info = tar.gettarinfo(path, arcname=path.relative_to(tree).as_posix())
            info.name = ("../../escaped/" if i % 2 else "/escaped/") + info.name
            with path.open("rb") as image:
                tar.addfile(info, image)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.startswith("/") for n in names) and any(n.startswith("../") for n in names)
    cache = tmp_path / "cache"
    images = read_image_set(archive, cache)
    assert len(images.labels)  # read from inside the archive: a member name is only a key
    assert not Path("/escaped").exists() and not list(tmp_path.parent.parent.glob("escaped"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and tree not in p.parents]
    assert {p.parent for p in written} <= {tmp_path, cache}
