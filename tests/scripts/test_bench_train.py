import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_bench_train_prints_a_ratio(cache_dir):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_dir)}
    args = ["--train-subset", "256", "--epochs", "1", "--rounds", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_train.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    ratio = re.search(r"ratio ours / plain\s+([0-9.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0
