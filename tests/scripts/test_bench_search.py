import re

import pytest

from tests.conftest import FACES, run_script


@pytest.mark.slow
def test_bench_search_prints_efficiency_and_ratios(cache_dir):
    args = ["--trials", "3", "--epochs", "2", "--train-subset", "300", "--data", str(FACES)]
    args += ["--runner", "local"]
    proc = run_script("bench_search.py", *args, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    efficiency = re.search(r"orchestration efficiency \(FIFO stage\)\s+([0-9.]+)", proc.stdout)
    assert efficiency and 0 < float(efficiency.group(1)) <= 1
    epochs = re.search(r"ratio ASHA / FIFO epochs consumed\s+([0-9.]+)", proc.stdout)
    assert epochs and 0 < float(epochs.group(1)) <= 1
