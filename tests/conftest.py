"""Shared fixtures: the real data sets from ../shared/data, decoded once per test session."""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from trainables.config import TrialConfig
from trainables.datasets import DataSplits, load_data

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BABYSITTER_SHARED_DATA", REPO.parent / "shared" / "data"))
FACES = SHARED_DATA / "cbcl-faces.tar.gz"
CIFAR10 = SHARED_DATA / "cifar10-jpg.tar.gz"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Decoded data sets, kept between test runs (entries are keyed by the archive's bytes, so
    a stale one is never read); BABYSITTER_TEST_CACHE moves it."""
    default = Path.home() / ".cache" / "babysitter-tests"
    path = Path(os.environ.get("BABYSITTER_TEST_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema migrated once (a new one spends ~2 s on it)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def study_dir(tmp_path: Path, empty_store: Path) -> Path:
    """A study folder to be, its MLflow store already migrated: a copy of ``empty_store``."""
    return seed_store(tmp_path / "study", empty_store)


def seed_store(study: Path, empty_store: Path) -> Path:
    store = study / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_store, store)
    return study


def shared_ray() -> None:
    """One local Ray runtime in the test process for the whole session, started on first use:
    the orchestrator called in process (``babysit_here`` included) reuses it, as it reuses any
    runtime its process already has, instead of starting and stopping one per study."""
    import ray

    if not ray.is_initialized():
        ray.init("local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture
def local_ray() -> None:
    shared_ray()


@pytest.fixture(scope="session")
def faces_config() -> TrialConfig:
    assert FACES.exists(), f"missing {FACES}: tests read the real data from ../shared/data"
    return TrialConfig(dataset="faces", data=str(FACES), threads=2)


@pytest.fixture(scope="session")
def faces(faces_config: TrialConfig, cache_dir: Path) -> DataSplits:
    return load_data(faces_config, cache_dir)


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 120-image CBCL subset (60 face, 60 non-face): small data, where a validation
    split of 10 images cannot rank anything and trials cross-validate."""
    from scripts.make_subset import make_subset

    out = tmp_path_factory.mktemp("tiny-faces")
    make_subset(FACES, out, per_class=60, seed=0)
    return out


# Appended to a test spec whose test is not about the sanity checks' thoroughness, the report or
# the logged model: the checks take a quicker look, and neither is made (the product's defaults
# make both; tests of them keep the defaults).
QUICK_SANITY = "\nsanity: {sample: 256, overfit_steps: 150, probe_steps: 20, val_images: 500}\n"
NO_OUTPUTS = "\noutputs: {report: false, mlflow_model: false}\n"
QUICK = QUICK_SANITY + NO_OUTPUTS

FINISHED_SPEC = (
    f"""
name: report
trial: {{dataset: faces, data: {FACES}, train_subset: 300, threads: 1}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
  augment: {{choice: [false, true]}}
coarse:
  trials: 6
  epochs: 3
  scheduler: {{grace_period: 1, reduction_factor: 2, within: augment}}
fine: {{trials: 3, epochs: 3}}
final: {{epochs: 3}}
narrowing: {{top_k: 3}}
min_rung_steps: 1
"""
    + QUICK_SANITY
)


# a whole study (no sanity checks) in about 15 s in process: for what needs one, not its results
TINY_SPEC = f"""
name: tiny
trial: {{dataset: faces, data: {FACES}, train_subset: 200, threads: 1}}
search_space: {{lr: {{loguniform: [1.0e-3, 1.0e-1]}}}}
coarse: {{trials: 2, epochs: 1}}
fine: {{trials: 1, epochs: 1}}
final: {{epochs: 1}}
min_rung_steps: 1
"""


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, cache_dir, empty_store) -> tuple[Path, str]:
    """A small study run to the end in process (local stage runner, sanity checks on): its
    folder and its console output. Read it, never change it."""
    from orchestrator import session
    from orchestrator.names import BudgetName, Step
    from orchestrator.search.local_stage import LocalStageRunner
    from orchestrator.study.folder import StudyFolder
    from orchestrator.study.spec import parse_spec

    path = seed_store(tmp_path_factory.mktemp("report") / "study", empty_store)
    lines: list[str] = []
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=LocalStageRunner())
    spec = parse_spec(FINISHED_SPEC, "report")
    session.run_new(spec, StudyFolder(path), Step.FINAL, BudgetName.FULL, options)
    return path, "\n".join(lines)


@pytest.fixture(scope="session")
def cifar10(cache_dir: Path) -> DataSplits:
    assert CIFAR10.exists(), f"missing {CIFAR10}: tests read the real data from ../shared/data"
    return load_data(TrialConfig(dataset="cifar10", data=str(CIFAR10)), cache_dir)


def write_image_tree(root: Path, layout: dict[str, int], size=(12, 10), mode="RGB") -> Path:
    """Write ``{"train/cat": 3, "dog": 2, ...}`` as small random PNGs under ``root``."""
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "L": 1}[mode]
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(
                root / folder / f"{i:03d}.png"
            )
    return root


BABYSIT = [sys.executable, "-m", "orchestrator"]


def babysit(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``babysit ARGS`` as a user runs it: a new process."""
    env = {**os.environ, "BABYSITTER_CACHE": str(cache)}
    return subprocess.run(
        [*BABYSIT, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def babysit_started(*args: Any, cache: Path, **env: str) -> subprocess.Popen:
    """``babysit ARGS`` started as a shell starts it, in a process group of its own (which a
    Ctrl-C or a scheduler's kill reaches whole), its output piped."""
    return subprocess.Popen(
        [*BABYSIT, *map(str, args)],
        env={**os.environ, "BABYSITTER_CACHE": str(cache), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def babysit_here(*args: Any, cache: Path) -> subprocess.CompletedProcess:
    """``babysit ARGS`` in the test's own process: the same code from argv to exit code, without
    a new interpreter importing torch, Ray and MLflow again (a local Ray runtime, when the
    command needs one, starts and stops in this process)."""
    from orchestrator.cli.app import run

    if args and args[0] in ("run", "resume", "search"):
        shared_ray()
    out, err = io.StringIO(), io.StringIO()
    env = {"BABYSITTER_CACHE": str(cache)}
    with mock.patch.dict(os.environ, env), redirect_stdout(out), redirect_stderr(err):
        code = run([str(a) for a in args])
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def run_main(script: str, *args: Any, cache: Path) -> str:
    """``scripts/SCRIPT``'s ``main(ARGS)`` in the test's process, its decode cache under
    ``cache`` (the code a user runs, without a new interpreter importing torch again); its
    output."""
    module = importlib.import_module(f"scripts.{script}")
    out = io.StringIO()
    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(cache)}), redirect_stdout(out):
        module.main([str(a) for a in args])
    return out.getvalue()


def run_script(name: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    """Run ``scripts/NAME`` as a user does, with its decode cache under ``cache``."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with the session's status, skipping the interpreter's teardown: with Ray and
    MLflow run in this process, it once crashed there (a segfault after "162 passed")."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
