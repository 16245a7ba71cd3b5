"""Write a small, seeded subset of an image-folder data set (a folder or .tar/.tar.gz of class
folders) as a new folder of class folders: the small sets babysitter's judgement is tested on.

    python scripts/make_subset.py ../shared/data/cbcl-faces.tar.gz /tmp/faces-200 --per-class 100
"""

from __future__ import annotations

import argparse
import random
import shutil
import tarfile
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm"}


def class_files(source: Path) -> dict[str, list[str]]:
    """Image paths by class folder (the parent folder's name), sorted."""
    if source.is_dir():
        names = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()]
    else:
        with tarfile.open(source) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
    classes: dict[str, list[str]] = {}
    for name in sorted(names):
        path = PurePosixPath(name)
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            classes.setdefault(path.parent.name, []).append(name)
    return classes


def make_subset(source: Path, out: Path, per_class: int, seed: int) -> dict[str, int]:
    """``per_class`` images of every class, drawn with ``seed``; returns the counts written."""
    chosen = {
        label: random.Random(f"{seed}-{label}").sample(files, min(per_class, len(files)))
        for label, files in class_files(source).items()
    }
    for label in chosen:
        (out / label).mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for label, files in chosen.items():
            for name in files:
                shutil.copyfile(source / name, out / label / PurePosixPath(name).name)
    else:
        wanted = {name: label for label, files in chosen.items() for name in files}
        with tarfile.open(source) as tar:
            for member in tar:
                if member.name in wanted:
                    target = out / wanted[member.name] / PurePosixPath(member.name).name
                    target.write_bytes(tar.extractfile(member).read())
    return {label: len(files) for label, files in chosen.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a folder or .tar(.gz) of class folders")
    parser.add_argument("out", type=Path, help="the folder to write (class folders inside)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"OUT {str(args.out)!r} is not empty; pass a new folder")
    counts = make_subset(args.source, args.out, args.per_class, args.seed)
    print(f"{args.out}: " + ", ".join(f"{n} {label}" for label, n in counts.items()))


if __name__ == "__main__":
    main()
