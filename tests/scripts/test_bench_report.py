import re

import pytest

from tests.conftest import FACES, run_script


@pytest.mark.slow
def test_bench_report_prints_the_report_cost_and_the_planted_ratio(cache_dir):
    proc = run_script(
        "bench_report.py", "--budget", "smoke", "--data", str(FACES), "--runner", "local",
        cache=cache_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    share = re.search(r"wall / wall without reports = ([0-9.]+)", proc.stdout)
    assert share and float(share.group(1)) > 1
    assert re.search(r"babysit report on planted \(130 trials\): [0-9.]+ s", proc.stdout)
    ratio = re.search(r"planted / study: ([0-9.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0
    assert "`babysit report` on planted, a new process" in proc.stdout
