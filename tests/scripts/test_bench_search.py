import os
import re
import subprocess
import sys

import pytest

from tests.conftest import FACES, REPO


@pytest.mark.slow
def test_bench_search_prints_efficiency_and_ratios(cache_dir):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_dir)}
    args = ["--trials", "3", "--epochs", "2", "--train-subset", "300", "--data", str(FACES)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_search.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    efficiency = re.search(r"orchestration efficiency \(FIFO stage\)\s+([0-9.]+)", proc.stdout)
    assert efficiency and 0 < float(efficiency.group(1)) <= 1
    epochs = re.search(r"ratio ASHA / FIFO epochs consumed\s+([0-9.]+)", proc.stdout)
    assert epochs and 0 < float(epochs.group(1)) <= 1
