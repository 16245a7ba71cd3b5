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


@pytest.mark.slow
def test_bench_train_formats_names_each_layout_against_fp32(cache_dir):
    args = ["--formats", "--train-subset", "128", "--rounds", "1", "--threads", "1"]
    proc = run_script("bench_train.py", *args, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(
        r"width (\d) batch_norm (\w+)\s*: fp32 NCHW \d+ img/s \(x1\.00\), "
        r"channels_last \d+ img/s \(x[0-9.]+\), channels_last\+bf16",
        proc.stdout,
    )
    assert rows == [("1", "False"), ("1", "True"), ("2", "False"), ("2", "True")], proc.stdout
