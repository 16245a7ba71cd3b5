import re

import pytest

from tests.conftest import run_script


@pytest.mark.slow
def test_bench_train_prints_a_ratio(cache_dir):
    """As a user runs it, a new process; the loop within a sane band of plain PyTorch's."""
    args = ["--train-subset", "256", "--epochs", "1", "--rounds", "1", "--threads", "1"]
    proc = run_script("bench_train.py", *args, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    ratio = re.search(r"ratio ours / plain\s+([0-9.]+)", proc.stdout)
    assert ratio and 0.3 < float(ratio.group(1)) < 3, proc.stdout
