import re

import pytest

from tests.conftest import FACES, run_script


@pytest.mark.slow
def test_bench_tracking_prints_the_on_off_ratio(cache_dir):
    proc = run_script(
        "bench_tracking.py",
        "--budget",
        "smoke",
        "--target",
        "coarse",
        "--data",
        str(FACES),
        "--runner",
        "local",
        cache=cache_dir,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tracking off" in proc.stdout and "tracking on" in proc.stdout
    ratio = re.search(r"ratio tracking on / off wall time\s+([0-9.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0
