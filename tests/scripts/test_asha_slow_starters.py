import re

import pytest

from tests.conftest import FACES, run_main


@pytest.mark.slow
def test_asha_slow_starters_replays_each_rule_on_the_same_curves(cache_dir):
    args = ["--configs", "4", "--epochs", "2", "--train-subset", "200", "--top", "2"]
    out = run_main("asha_slow_starters", *args, "--orders", "3", "--workers", "1", "--data", FACES,
                   cache=cache_dir)  # fmt: skip
    assert "trained  8 epochs" in out
    assert len(re.findall(r"^  config \d+ +0\.\d{4}  batch_norm=", out, re.M)) == 2
    rules = dict(re.findall(r"^  (asha|grace x2|within augment) .*epochs +[0-9.]+ \(x([0-9.]+)\)",
                            out, re.M))  # fmt: skip
    assert rules["asha"] == "1.00" and set(rules) == {"asha", "grace x2", "within augment"}
    assert float(rules["grace x2"]) >= 1.0  # a longer grace period never trains less
