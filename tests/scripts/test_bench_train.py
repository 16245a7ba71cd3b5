import re

from tests.conftest import run_script


def test_bench_train_prints_a_ratio(cache_dir):
    args = ["--train-subset", "256", "--epochs", "1", "--rounds", "1", "--threads", "1"]
    proc = run_script("bench_train.py", *args, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    ratio = re.search(r"ratio ours / plain\s+([0-9.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0
