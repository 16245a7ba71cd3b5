"""`babysit results`, `summary` and `--version` on a finished study, as a user reads them."""

from __future__ import annotations

import re
import shutil

import pandas as pd

from orchestrator.search.ranking import rank
from orchestrator.study.folder import StudyFolder
from tests.conftest import assert_one_line_error, babysit_here


def rows(stdout: str) -> list[list[str]]:
    """The printed table's data rows, cells split on blanks (a winner row starts with *)."""
    return [line.split() for line in stdout.splitlines()[1:] if not line.startswith("(")]


def test_results_rank_each_round_and_mark_its_winner(finished_study, cache_dir):
    path, _ = finished_study
    proc = babysit_here("results", path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "ranked by val_acc, best first; ties within one standard error" in proc.stdout
    winners = [r for r in rows(proc.stdout) if r[0] == "*"]
    assert [w[1] for w in winners] == ["coarse", "fine"]
    folder = StudyFolder(path)
    for winner in winners:
        assert winner[2] == rank(folder.read_stage(winner[1]).trials)["trial_id"].iloc[0]
    fine = [r for r in rows(proc.stdout) if "fine" in r[:2]]
    assert fine[0][0] == "*"  # best first, not in trial-id order

    top = babysit_here("results", path, "--top", "2", cache=cache_dir)
    assert len(rows(top.stdout)) == 4  # two per round


def test_results_say_why_asha_stopped_a_trial_and_export_every_column(
    finished_study, cache_dir, tmp_path
):
    import pandas as pd

    path, _ = finished_study
    proc = babysit_here("results", path, "--stage", "coarse", cache=cache_dir)
    header = proc.stdout.splitlines()[0].split()
    assert "asha_cutoff" in header and "asha_compared" in header
    assert "fell below asha_cutoff, from asha_compared trials" in proc.stdout
    stopped = [r for r in rows(proc.stdout) if "stopped_by_asha" in r]
    assert stopped
    for row in stopped:
        cells = row[1:] if row[0] == "*" else row
        at = {name: cells[i - 1] for i, name in enumerate(header) if i}  # best has no cell
        assert float(at["val_acc"]) < float(at["asha_cutoff"]) and int(at["asha_compared"]) >= 1

    out = tmp_path / "coarse.csv"
    export = babysit_here("results", path, "--stage", "coarse", "--out", out, cache=cache_dir)
    assert export.returncode == 0, export.stderr
    table = pd.read_csv(out)
    assert {"optimizer", "epochs", "asha_rung", "best_val_acc", "node_ip"} <= set(table.columns)


def test_results_sort_by_a_column_and_say_so(finished_study, cache_dir):
    path, _ = finished_study
    proc = babysit_here("results", path, "--stage", "coarse", "--sort", "val_loss", cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "sorted by val_loss (smallest first)" in proc.stdout
    header = proc.stdout.splitlines()[0].split()
    losses = [float(r[header.index("val_loss") - (r[0] != "*")]) for r in rows(proc.stdout)]
    assert losses == sorted(losses)
    assert_one_line_error(
        babysit_here("results", path, "--sort", "nope", cache=cache_dir),
        "--sort 'nope': no such column; use one of",
        "val_loss",
    )


def test_results_show_the_final_run_and_the_sanity_checks(finished_study, cache_dir, tmp_path):
    path, _ = finished_study
    final = babysit_here("results", path, "--stage", "final", cache=cache_dir)
    assert final.returncode == 0, final.stderr
    assert "final  epoch 3/3" in final.stdout and "test accuracy" in final.stdout
    sanity = babysit_here("results", path, "--stage", "sanity", cache=cache_dir)
    assert sanity.stdout.startswith("sanity   passed") and "lr_probe" in sanity.stdout
    assert_one_line_error(
        babysit_here("results", path, "--stage", "fine9", cache=cache_dir),
        "--stage 'fine9'",
        "finished steps: sanity, coarse, fine, final",
    )
    copy = tmp_path / "unchecked"
    shutil.copytree(path, copy)
    (copy / "sanity.json").unlink()
    assert_one_line_error(
        babysit_here("results", copy, "--stage", "sanity", cache=cache_dir),
        "has no sanity record",
        "`babysit sanity` runs the checks",
    )


def test_results_show_the_flag_that_ranks_a_trial_last(finished_study, tmp_path, cache_dir):
    copy = tmp_path / "flagged"
    shutil.copytree(finished_study[0], copy)
    table = copy / "results" / "coarse.parquet"
    trials = pd.read_parquet(table)
    best = rank(trials).iloc[0]["trial_id"]
    trials.loc[trials["trial_id"] == best, "min_val_loss"] = 10.0  # it never learned
    trials.to_parquet(table)
    proc = babysit_here("results", copy, "--stage", "coarse", cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "flag" in lines[0].split()
    assert "a flagged trial ranks below every healthy one (flag says why)" in proc.stdout
    flagged = [line for line in lines if best in line]
    assert len(flagged) == 1 and "not-learning" in flagged[0] and "*" not in flagged[0]
    assert all(
        len(row) in (len(lines[0].split()), len(lines[0].split()) - 1) for row in rows(proc.stdout)
    )


def test_summary_prints_the_study_from_its_records(finished_study, cache_dir):
    path, _ = finished_study
    proc = babysit_here("summary", path, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("study    report (budget full)")
    size = float(re.search(r"finished; ([0-9.]+) MB on disk", out).group(1))
    assert 0.5 < size < 50  # mostly the MLflow store, the final model and the report
    order = ["sanity   passed", "coarse ", "narrow   coarse -> fine", "fine ", "chosen   lr="]
    order += ["test accuracy", "report   "]
    positions = [out.index(part) for part in order]
    assert positions == sorted(positions)
    assert re.search(r"^diagnose ", out, re.MULTILINE)  # the small study underfits: it says so


def test_version(tmp_path):
    proc = babysit_here("--version", cache=tmp_path)
    assert proc.returncode == 0 and re.fullmatch(r"babysit, version \d+\.\d+\.\d+\n", proc.stdout)
