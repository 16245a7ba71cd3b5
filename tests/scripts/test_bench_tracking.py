import re

import pytest

from tests.conftest import FACES, run_main


@pytest.mark.slow
def test_bench_tracking_prints_the_on_off_ratio(cache_dir):
    args = ["--budget", "smoke", "--target", "coarse", "--data", FACES, "--runner", "local"]
    out = run_main("bench_tracking", *args, cache=cache_dir)
    assert "tracking off" in out and "tracking on" in out
    ratio = re.search(r"ratio tracking on / off wall time\s+([0-9.]+)", out)
    assert ratio and 0.8 < float(ratio.group(1)) < 5, out  # recording costs, but not the study
