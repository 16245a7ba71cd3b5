"""`babysit sanity` as a user runs it: a hard failure stops with one line, and a rerun replaces
the failed record. (A passing run, its table, plot, MLflow run and `lr: auto`, is checked in
the end-to-end study test.)"""

from __future__ import annotations

import json
import shutil

import pytest
from mlflow import MlflowClient

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.search.space import Param
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import parse_spec
from orchestrator.tracking.sqlite_store import embedded_uri
from tests.conftest import (
    FINISHED_SPEC,
    NO_OUTPUTS,
    assert_one_line_error,
    babysit_here,
    write_image_tree,
)
from tests.orchestrator.tracking.mlflow_checks import assert_sanity_recorded, tree

NOISE_SPEC = """
name: noise
trial: {{dataset: imagefolder, data: {data}}}
search_space: {{lr: auto}}
coarse: {{trials: 2, epochs: 1}}
fine: {{trials: 1, epochs: 1}}
""" + NO_OUTPUTS.replace("{", "{{").replace("}", "}}")


@pytest.mark.slow
def test_labels_that_carry_no_signal_fail_in_one_line_and_a_rerun_replaces_the_record(
    tmp_path, cache_dir, study_dir
):
    noise = write_image_tree(tmp_path / "noise", {"a": 60, "b": 60}, size=(8, 8))
    spec = tmp_path / "noise.yaml"
    spec.write_text(NOISE_SPEC.format(data=noise))
    study = study_dir
    proc = babysit_here("sanity", spec, "--study-dir", study, cache=cache_dir)
    assert_one_line_error(proc, "sanity checks failed: ", "beats_chance", "--skip-sanity")
    assert "FAIL  beats_chance" in proc.stdout
    first = json.loads((study / "sanity.json").read_text())
    assert not first["passed"]
    assert_sanity_recorded(embedded_uri(study), "noise", study)

    again = babysit_here("sanity", spec, "--study-dir", study, cache=cache_dir)
    assert_one_line_error(again, "sanity checks failed: ")
    assert "sanity   checking" in again.stdout  # a failed result is never reused
    second = json.loads((study / "sanity.json").read_text())
    assert second["finished_at"] >= first["finished_at"]
    assert_sanity_recorded(embedded_uri(study), "noise", study)  # one sanity run, the new one
    runs = MlflowClient(embedded_uri(study)).search_runs(
        [MlflowClient(embedded_uri(study)).get_experiment_by_name("noise").experiment_id]
    )
    assert [r.data.tags["finished_at"] for r in runs] == [second["finished_at"]]
    assert set(tree(embedded_uri(study), "noise")) == {"sanity"}
    assert not (study / "results").exists()


def test_skipping_the_sanity_checks_of_an_auto_lr_study_is_refused_up_front(tmp_path, cache_dir):
    spec = tmp_path / "noise.yaml"
    spec.write_text(NOISE_SPEC.format(data=tmp_path / "nowhere"))
    study = tmp_path / "study"
    proc = babysit_here("run", spec, "--study-dir", study, "--skip-sanity", cache=cache_dir)
    assert_one_line_error(proc, "--skip-sanity: ", "search_space.lr: auto", "drop --skip-sanity")
    assert not study.exists()


@pytest.mark.slow
def test_a_study_whose_lr_range_misses_the_probes_is_warned(finished_study, tmp_path, cache_dir):
    path, out = finished_study
    assert "warning  search_space.lr" not in out  # [1e-3, 1e-1] holds most of what learns
    seed_range = tmp_path / "seed-range"
    seed_range.mkdir()
    shutil.copy(path / "sanity.json", seed_range / "sanity.json")  # passed: reused, not rerun
    spec = parse_spec(
        FINISHED_SPEC.replace("[1.0e-3, 1.0e-1]", "[1.0e-6, 1.0e-3]").replace(
            "trials: 6, epochs: 3", "trials: 1, epochs: 1"
        ),
        "seed-range",
    )
    lines: list[str] = []
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=LocalStageRunner())
    session.run_new(spec, StudyFolder(seed_range), Step.COARSE, BudgetName.FULL, options)
    learns = StudyFolder(path).read_sanity().lr_range
    share = Param.parse("lr", {"loguniform": [1e-6, 1e-3]}).range().coverage(*learns)
    warning = next(line for line in lines if line.startswith("warning  search_space.lr"))
    assert f"covers {share:.0%} of the range where the lr probe saw the loss fall" in warning
    assert f"[{learns[0]:.0e}, {learns[1]:.0e}]" in warning
    assert lines.index(warning) < next(i for i, x in enumerate(lines) if x.startswith("coarse"))
