import re

import pytest

from tests.conftest import run_script


@pytest.mark.slow
def test_bench_report_plants_130_trials_and_prints_the_ratio(finished_study, cache_dir):
    """Part 2 on the suite's finished study (part 1, a study with reports on, is the same
    Study run the study tests make, with a timing observer)."""
    path, _ = finished_study
    proc = run_script("bench_report.py", "--study", str(path), cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "wall without reports" not in proc.stdout  # part 1 skipped
    assert re.search(r"babysit report on planted \(130 trials\): [0-9.]+ s", proc.stdout)
    ratio = re.search(r"planted / study: ([0-9.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0
    assert "`babysit report` on planted, a new process" in proc.stdout
