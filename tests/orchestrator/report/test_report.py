"""The command center of a real (small) study: written by the study itself after each step,
opened in a real headless Chromium, attached to the MLflow runs, and rewritten on demand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.names import Step
from orchestrator.study.folder import StudyFolder
from tests.conftest import assert_one_line_error, babysit_here

VIEWS = ("search-map", "curves", "diagnosis", "update-ratio", "insides", "test", "importance")
VIEWS += ("sanity",)
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def study(finished_study) -> tuple[Path, str]:
    return finished_study


def test_the_study_writes_its_report_after_each_step_and_prints_the_diagnosis(study):
    path, out = study
    folder = StudyFolder(path)
    assert out.count(f"report   {folder.report_file} (") == 3  # coarse, fine, final
    assert "diagnose " in out.split("test accuracy")[-1]  # at the end, after the test report
    assert [p.name for p in folder.figures(Step.COARSE)] == [
        "choices.png", "curves.png", "history.png", "importance.png", "search_map.png",
    ]  # fmt: skip
    final = {p.name for p in folder.figures(Step.FINAL)}
    assert {"filters.png", "activations.png", "confusion.png", "update_ratio.png"} <= final
    printed = [line.removeprefix("diagnose ") for line in out.splitlines()]
    recorded = folder.read_diagnosis(Step.FINAL)  # what the final MLflow run is tagged with
    assert recorded is not None and all(line in printed for line in recorded)


def test_the_final_mlflow_run_holds_the_figures_and_the_report(study):
    from mlflow import MlflowClient

    path, _ = study
    client = MlflowClient(f"sqlite:///{path / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("report").experiment_id],
        "tags.stage = 'final' and tags.kind = 'stage'",
    )
    assert len(runs) == 1
    names = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"filters.png", "activations.png", "confusion.png", "report.html"} <= names


@pytest.mark.slow
def test_the_report_opens_in_a_real_browser_with_every_view(study, tmp_path, cache_dir):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "needs Debian's chromium: apt-get install chromium (scripts/test does)"
    path, _ = study
    out = babysit_here("report", path, "--out", tmp_path / "r.html", cache=cache_dir)
    assert out.returncode == 0, out.stderr
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "r.html").as_uri())
        shown = page.eval_on_selector_all(
            "section.view", "s => s.map(e => [e.id, e.innerText.length])"
        )
        images = page.eval_on_selector_all(
            "img", "i => i.map(e => [e.alt, e.complete && e.naturalWidth > 0])"
        )
        diagnosis = page.inner_text("#diagnosis")
        mattered = page.inner_text("#importance")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert set(VIEWS) <= {key for key, _ in shown}
    assert len(images) >= 10 and all(ok for _, ok in images), images
    assert {"filters", "lr_probe", "choices"} <= set(dict(images))
    assert diagnosis.strip()  # a finding with its numbers, or the all-clear line
    assert "coarse: why ASHA stopped" in mattered and "compared with" in mattered
    assert "each augment value has rungs of its own" in mattered and "with augment=" in mattered
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_report_on_a_folder_that_is_no_study_is_one_line(tmp_path):
    proc = babysit_here("report", tmp_path, cache=tmp_path)
    assert_one_line_error(proc, str(tmp_path), "is not a study folder")


def test_a_running_study_reports_what_it_has(study, tmp_path, cache_dir):
    """A copy without its fine round and final run: the views say what has not run yet."""
    path, _ = study
    copy = tmp_path / "running"
    shutil.copytree(path, copy)
    shutil.rmtree(copy / "final")
    for name in ("fine.parquet", "fine_epochs.parquet"):
        (copy / "results" / name).unlink()
    proc = babysit_here("report", copy, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    page = (copy / "report.html").read_text()
    assert "the final model has not been trained yet" in page
    assert 'alt="search_map"' in page
