"""A study of the user's own network, as a user runs it: the sanity checks, the search of its
arguments and of AdamW's decay, the report's views of its insides, the MLflow records, and a
logged model that loads elsewhere with the user's file as its code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import FACES, babysit_here
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded

NETS = Path(__file__).parents[2] / "fixtures" / "models" / "nets.py"
SPEC = """
name: own
trial: {{dataset: faces, data: {data}, train_subset: 500, threads: 1,
         model: {nets}:small_resnet, optimizer: adamw, arch: {{depth: 1}}}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  weight_decay: {{loguniform: [1.0e-4, 1.0e-1]}}
  arch.width: {{choice: [4, 8]}}
coarse: {{trials: 4, epochs: 2}}
fine: {{trials: 1, epochs: 2}}
final: {{epochs: 2}}
narrowing: {{top_k: 2}}
cv: off
min_rung_steps: 1
"""


@pytest.mark.slow
def test_a_study_of_a_users_resnet_searches_its_width_and_serves_it_without_its_file(
    tmp_path, cache_dir, study_dir
):
    nets = shutil.copy(NETS, tmp_path / "my_nets.py")
    spec = tmp_path / "own.yaml"
    spec.write_text(SPEC.format(data=FACES, nets=nets))  # the sanity checks' own look
    proc = babysit_here("run", spec, "--study-dir", study_dir, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "sanity   passed" in proc.stdout and "test accuracy" in proc.stdout
    sanity = json.loads((study_dir / "sanity.json").read_text())
    ratios = next(c for c in sanity["checks"] if c["name"] == "update_ratio")
    named = {"ratio/0", "ratio/3.conv1", "ratio/3.conv2", "ratio/6"}  # by module path
    assert ratios["status"] == "pass" and named <= set(ratios["values"])
    coarse = pd.read_parquet(study_dir / "results" / "coarse.parquet")
    assert set(coarse["arch.width"]) <= {4, 8} and coarse["weight_decay"].nunique() == 4
    copy = study_dir.absolute() / "code" / "my_nets.py"  # the study trains its own copy
    assert set(coarse["model"]) == {f"{copy}:small_resnet"} and set(coarse["arch.depth"]) == {1}
    assert copy.read_bytes() == NETS.read_bytes()
    report = (study_dir / "report.html").read_text()
    for view in ("filters", "fc_weights", "activations", "update_ratio", "confusion"):
        assert f'alt="{view}"' in report  # every view of its insides, drawn
    assert_study_recorded(embedded_uri(study_dir), "own", study_dir)

    os.remove(nets)  # the logged model carries its code
    client = MlflowClient(embedded_uri(study_dir))
    (final,) = client.search_runs(
        [client.get_experiment_by_name("own").experiment_id], "tags.stage = 'final'"
    )
    assert final.data.params["arch.depth"] == "1" and "arch.width" in final.data.params
    script = f"""
import mlflow, numpy as np
mlflow.set_tracking_uri({embedded_uri(study_dir)!r})
model = mlflow.pyfunc.load_model({final.data.tags["model"]!r})
print(model.predict(np.load({str(study_dir / "final" / "input_example.npy")!r})).shape)
"""
    served = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert served.returncode == 0, served.stderr[-2000:]
    assert served.stdout.splitlines()[-1] == "(2, 2)"
