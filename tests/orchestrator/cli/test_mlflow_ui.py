"""`babysit ui` on a finished study, looked at in a real headless Chromium: the runs table a
reviewer lands on, and the final run's artifacts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import BABYSIT
from tests.orchestrator.tracking.test_store import free_port, wait_for

CHROMIUM = shutil.which("chromium")
HEADERS = ("val_acc", "lr", "l2", "stage", "status")


@pytest.fixture(scope="module")
def served(finished_study) -> Iterator[tuple[str, str]]:
    """The study's UI: the runs URL `babysit ui` prints, and the server's API root."""
    path, _ = finished_study
    port = free_port()
    ui = subprocess.Popen(
        [*BABYSIT, "ui", str(path), "--port", str(port)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )  # fmt: skip
    try:
        line = ui.stdout.readline()
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        wait_for(f"{api}/experiments/get-by-name?experiment_name=report")
        yield line.rsplit(" ", 1)[-1].strip(), api
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as reply:
        return json.load(reply)


def _page(browser, url: str, wait_for_text: str) -> str:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url)
    page.get_by_text(wait_for_text, exact=True).first.wait_for(timeout=60_000)
    return page.inner_text("body")


@pytest.mark.slow
def test_the_runs_table_shows_score_settings_and_status_without_clicking(served, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "needs Debian's chromium: apt-get install chromium (scripts/test does)"
    runs_url, _ = served
    assert "viewStateShareKey=" in runs_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(runs_url)
        page.get_by_text("stopped_by_asha").first.wait_for(timeout=60_000)
        headers = page.eval_on_selector_all(
            "[role=columnheader]", "h => h.map(e => e.innerText.trim())"
        )
        cells = {
            column: page.eval_on_selector_all(
                f"[role=gridcell][col-id*='`{column}`']",
                "c => c.map(e => [Number(e.parentElement.getAttribute('row-index')),"
                " e.innerText.trim()])",
            )
            for column in ("val_acc", "status")
        }
        page.screenshot(path=str(tmp_path / "runs.png"))
        browser.close()
    assert set(HEADERS) <= set(headers), headers
    scores = [float(text) for _, text in sorted(cells["val_acc"]) if text and text != "-"]
    assert len(scores) >= 5 and scores == sorted(scores, reverse=True)  # best val_acc first
    statuses = {text for _, text in cells["status"]}
    assert {"completed", "stopped_by_asha"} <= statuses
    assert (tmp_path / "runs.png").stat().st_size > 20_000


@pytest.mark.slow
def test_the_final_run_lists_the_figures_among_its_artifacts(served):
    from playwright.sync_api import sync_playwright

    runs_url, api = served
    experiment = runs_url.split("/experiments/")[1].split("/")[0]
    found = _post(
        f"{api}/runs/search",
        {"experiment_ids": [experiment], "filter": "tags.stage = 'final' and tags.kind = 'stage'"},
    )["runs"]
    assert len(found) == 1
    run_id = found[0]["info"]["run_id"]
    base = runs_url.split("/#/")[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        text = _page(browser, f"{base}/#/experiments/{experiment}/runs/{run_id}/artifacts",
                     "filters.png")  # fmt: skip
        browser.close()
    for name in ("filters.png", "activations.png", "confusion.png", "wrong.png", "report.html"):
        assert name in text
    query = urllib.parse.urlencode({"run_id": run_id, "path": "filters.png"})
    with urllib.request.urlopen(f"{base}/get-artifact?{query}") as reply:
        assert reply.read(8) == b"\x89PNG\r\n\x1a\n"  # the figure itself, served
