import re

import pytest

from tests.conftest import run_main


@pytest.mark.slow
def test_bench_report_plants_130_trials_and_prints_the_ratio(finished_study, cache_dir):
    """Part 2 on the suite's finished study (part 1, a study with reports on, is the same
    Study run the study tests make, with a timing observer)."""
    path, _ = finished_study
    out = run_main("bench_report", "--study", path, cache=cache_dir)
    assert "wall without reports" not in out  # part 1 skipped
    assert re.search(r"babysit report on planted \(130 trials\): [0-9.]+ s", out)
    ratio = re.search(r"planted / study: ([0-9.]+)", out)
    assert ratio and 0.5 < float(ratio.group(1)) < 20, out  # 130 trials cost more, not 20x
    assert "`babysit report` on planted, a new process" in out
