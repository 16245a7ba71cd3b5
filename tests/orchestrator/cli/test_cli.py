"""The ``babysit`` console script as a user runs it: a real subprocess, real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import click
import pytest

from orchestrator.study.spec import load_spec
from tests.conftest import BABYSIT, FACES, assert_one_line_error, babysit_here, write_image_tree

FAST = ["--train-subset", "800", "--threads", "2"]


@pytest.mark.slow
def test_train_writes_metrics_checkpoint_and_test_report(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = babysit_here(
        "train", "faces", "--data", FACES, "--epochs", "2", *FAST, "--out", out, cache=cache_dir
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/2" in proc.stdout and "epoch 2/2" in proc.stdout
    assert "test accuracy" in proc.stdout and "confusion matrix" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["trial_status"] == "completed"
    test = json.loads((out / "test_metrics.json").read_text())
    assert sum(test["support"]) == 1396 and len(test["precision"]) == 2
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert (out / "checkpoint.pt").stat().st_size > 100_000


def test_huge_learning_rate_is_reported_as_diverged(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = babysit_here(
        "train", "faces", "--data", FACES, "--lr", "1e5", *FAST, "--out", out, cache=cache_dir
    )
    assert proc.returncode == 0, proc.stderr
    assert "DIVERGED" in proc.stdout and "epoch  1/10" in proc.stdout
    assert json.loads((out / "result.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path, cache_dir):
    args = ["train", "faces", "--data", FACES, "--epochs", "4", "--augment", "--threads", "2"]
    args += ["--train-subset", "2000"]
    whole = babysit_here(*args, "--out", tmp_path / "whole", cache=cache_dir)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    env = {**os.environ, "BABYSITTER_CACHE": str(cache_dir)}
    proc = subprocess.Popen(
        [*BABYSIT, *map(str, args), "--out", str(out)], env=env, stdout=subprocess.DEVNULL
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(metrics.read_text().splitlines()) < 4

    resumed = babysit_here(*args, "--out", out, "--resume", cache=cache_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resume   from epoch" in resumed.stdout

    def final(run: Path) -> dict:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
        return {k: v for k, v in rows[-1].items() if k not in ("epoch_seconds", "images_per_s")}

    assert final(out) == final(tmp_path / "whole")
    test_whole = json.loads((tmp_path / "whole" / "test_metrics.json").read_text())
    assert json.loads((out / "test_metrics.json").read_text()) == test_whole


def test_existing_run_is_neither_overwritten_nor_resumed_with_other_settings(tmp_path, cache_dir):
    out = tmp_path / "run"
    args = ["train", "faces", "--data", FACES, "--epochs", "1", *FAST, "--out", out]
    assert babysit_here(*args, cache=cache_dir).returncode == 0
    before = (out / "metrics.jsonl").read_text()
    assert_one_line_error(babysit_here(*args, cache=cache_dir), "already holds a run", "--resume")
    assert_one_line_error(
        babysit_here(*args, "--resume", "--lr", "0.5", cache=cache_dir), "lr=0.01, now lr=0.5"
    )
    assert (out / "metrics.jsonl").read_text() == before


@pytest.fixture
def bad_trees(tmp_path: Path) -> Path:
    write_image_tree(tmp_path / "one_class", {"cat": 3})
    write_image_tree(tmp_path / "pets", {"cat": 3, "dog": 3})
    (tmp_path / "empty").mkdir()
    tree = write_image_tree(tmp_path / "corrupt", {"cat": 3, "dog": 3})
    (tree / "dog" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(FACES.read_bytes()[:100_000])
    return tmp_path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "dogs"], ["'dogs' is not one of 'cifar10', 'faces', 'imagefolder'"]),
        (["train", "faces", "--data", "{t}/missing"], ["missing' does not exist"]),
        (["train", "faces", "--data", "{t}/empty"], ["holds no images"]),
        (["train", "faces", "--data", "{t}/cut.tar.gz"], ["cut.tar.gz' cannot be read"]),
        (["train", "imagefolder", "--data", "{t}/one_class"], ["found 1 class folder (cat)"]),
        (
            ["train", "imagefolder", "--data", "{t}/corrupt"],
            ["dog/bad.jpg' is corrupt (unknown format)"],
        ),
        (["train", "faces", "--data", "{t}/pets"], ["needs class folders face/ and nonface/"]),
        (["train", "faces"], ["needs --data PATH"]),
        (["train", "faces", "--lr", "0"], ["invalid lr=0.0: must be > 0"]),
        (["train", "faces", "--lr", "-3"], ["invalid lr=-3.0: must be > 0"]),
        (["train", "faces", "--batch-size", "0"], ["invalid batch_size=0"]),
        (["train", "faces", "--epochs", "x"], ["'x' is not a valid integer"]),
        (["train", "faces", "--frobnicate"], ["No such option", "--frobnicate", "--help"]),
        (["fly"], ["No such command 'fly'"]),
        (["init", "{t}/empty"], ["holds no images", "folder of class folders"]),
        (["init", "{t}/one_class"], ["found 1 class folder (cat)"]),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(bad_trees, cache_dir, args, fragments):
    args = [a.format(t=bad_trees) for a in args]
    assert_one_line_error(
        babysit_here(*args, "--out", bad_trees / "out", cache=cache_dir), *fragments
    )


def test_init_writes_a_spec_of_the_recipe_for_a_folder_and_never_overwrites_one(
    tmp_path, cache_dir
):
    pets = write_image_tree(tmp_path / "pets", {"cat": 4, "dog": 5}, size=(8, 6))
    out = tmp_path / "pets.yaml"
    proc = babysit_here("init", pets, "--out", out, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        "found    2 classes (cat, dog)",
        "found    9 images, 8x6 colour; 4 to 5 images per class",
    ]
    assert f"babysit run {out}" in proc.stdout
    spec = load_spec(str(out))
    assert spec == load_spec("imagefolder", data=str(pets)).model_copy(update={"trial": spec.trial})
    again = babysit_here("init", pets, "--out", out, cache=cache_dir)
    assert_one_line_error(again, f"--out '{out}' already exists", "pass another --out")
    bare = babysit_here("run", "imagefolder", "--study-dir", tmp_path / "s", cache=cache_dir)
    assert_one_line_error(bare, "preset 'imagefolder': trial: dataset imagefolder needs", "--data")
    assert not (tmp_path / "s").exists()


def test_help_is_useful():
    top = subprocess.run([*BABYSIT, "--help"], capture_output=True, text=True)
    assert top.returncode == 0 and "train" in top.stdout
    sub = subprocess.run([*BABYSIT, "train", "--help"], capture_output=True, text=True)
    for option in ("--lr", "--l2", "--batch-norm / --no-batch-norm", "--resume", "[default: 0.01]"):
        assert option in sub.stdout


def test_train_options_default_to_the_trial_configs_defaults():
    """`babysit train --help` shows TrialConfig's defaults, and omitting an option trains
    with them: one place for each default."""
    from orchestrator.cli.train_command import train
    from trainables.config import default, field_names

    options = {p.name: p.default for p in train.params if isinstance(p, click.Option)}
    shared = set(options) & set(field_names()) - {"data", "arch"}  # asked for; NAME=VALUE pairs
    assert len(shared) == len(field_names()) - 3  # every setting but DATASET, --data and --arch
    assert options["arch"] == () and default("arch") == {}
    assert {name: options[name] for name in shared} == {name: default(name) for name in shared}
