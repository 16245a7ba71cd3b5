import re

import pytest

from tests.conftest import FACES, run_main


@pytest.mark.slow
def test_bench_search_prints_efficiency_and_ratios(cache_dir):
    args = ["--trials", "3", "--epochs", "2", "--train-subset", "300", "--data", FACES]
    out = run_main("bench_search", *args, "--runner", "local", cache=cache_dir)
    efficiency = re.search(r"orchestration efficiency \(FIFO stage\)\s+([0-9.]+)", out)
    assert efficiency and 0.2 < float(efficiency.group(1)) <= 1, out
    epochs = re.search(r"ratio ASHA / FIFO epochs consumed\s+([0-9.]+)", out)
    assert epochs and 0.3 < float(epochs.group(1)) <= 1, out
