import re

import pytest

from tests.conftest import run_script


@pytest.mark.slow
def test_bench_fused_prints_fused_against_processes_and_one_trial(cache_dir):
    """As a user runs it: K = 2 fused, 2 processes and one trial, each a figure and a ratio;
    then the K that fuse: auto would pick, with the figures it picked it from."""
    args = ["--dataset", "faces", "--k", "2", "--steps", "6", "--threads", "2", "--knee"]
    proc = run_script("bench_fused.py", *args, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"one trial\s+\d+ img/s", proc.stdout), proc.stdout
    row = re.search(
        r"K=2 .*fused / processes x([0-9.]+), fused / one trial x([0-9.]+)", proc.stdout
    )
    assert row and all(0.01 < float(v) < 100 for v in row.groups()), proc.stdout
    knee = re.search(r"fuse: auto picks K=(\d) \(member-images/s: K=1 \d+, K=2 \d+\)", proc.stdout)
    assert knee and knee.group(1) in "12", proc.stdout
