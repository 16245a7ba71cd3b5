"""A team's tracking server: `mlflow server` on a real PostgreSQL, sixteen trials reporting to
it at once through Ray; every metric lands exactly once."""

from __future__ import annotations

import cloudpickle
import pandas as pd
import pytest

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.ray_stage import RayStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import parse_spec
from tests.conftest import FACES, QUICK
from tests.orchestrator import planted
from tests.orchestrator.tracking.mlflow_checks import assert_study_recorded
from tests.orchestrator.tracking.postgres import mlflow_server, postgres

CONCURRENT = 16
SPEC = (
    f"""
name: team
trial: {{dataset: faces, data: {FACES}, train_subset: 200, threads: 1}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
  l2: {{loguniform: [1.0e-5, 1.0e-3]}}
coarse: {{trials: {CONCURRENT}, epochs: 3, scheduler: {{type: fifo}}}}
fine: {{trials: 4, epochs: 2}}
final: {{epochs: 1}}
resources: {{cpus_per_trial: 0.1, max_concurrent: {CONCURRENT}}}
min_rung_steps: 1
"""
    + QUICK
)


@pytest.mark.slow
def test_sixteen_concurrent_trials_reach_a_postgres_backed_server_once_each(
    tmp_path, cache_dir, local_ray
):
    cloudpickle.register_pickle_by_value(planted)
    with (
        postgres() as database,
        mlflow_server(database, tmp_path / "artifacts") as url,
    ):
        lines: list[str] = []
        barrier = tmp_path / "started"
        barrier.mkdir()
        runner = RayStageRunner(planted.quick_trials(barrier, CONCURRENT))
        options = session.SessionOptions(
            cache_dir, tracking_uri=url, echo=lines.append, runner=runner
        )
        folder = StudyFolder(tmp_path / "study")
        spec = parse_spec(SPEC, "team")
        session.run_new(spec, folder, Step.FINAL, BudgetName.FULL, options, skip_sanity=True)
        coarse = pd.read_parquet(folder.results / "coarse.parquet")
        assert len(coarse) == CONCURRENT and set(coarse["status"]) == {"completed"}  # together
        assert "not recorded" not in "\n".join(lines)
        assert_study_recorded(url, "team", folder.path)
