"""Secrets in the environment (a Ray token, MLflow credentials, anything named like a key)
never reach the study folder, its MLflow store or the output of a study."""

from __future__ import annotations

import pytest

from orchestrator import session
from orchestrator.names import BudgetName, Step
from orchestrator.search.local_stage import LocalStageRunner
from orchestrator.study.folder import StudyFolder
from orchestrator.study.spec import parse_spec
from tests.conftest import TINY_SPEC

PLANTED = {
    "RAY_AUTH_TOKEN": "planted-ray-token-5c1d",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-77e0",
    "MLFLOW_TRACKING_TOKEN": "planted-mlflow-token-a9b2",
    "WANDB_API_KEY": "planted-api-key-0f3e",
    "DB_SECRET": "planted-db-secret-41aa",
}


@pytest.mark.slow
def test_planted_secrets_reach_neither_the_folder_nor_the_store_nor_the_output(
    tmp_path, cache_dir, monkeypatch
):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    lines: list[str] = []
    options = session.SessionOptions(cache_dir, echo=lines.append, runner=LocalStageRunner())
    folder = StudyFolder(tmp_path / "study")
    spec = parse_spec(TINY_SPEC, "secrets")
    session.run_new(spec, folder, Step.FINAL, BudgetName.FULL, options, skip_sanity=True)
    files = [p for p in folder.path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and len(files) > 20
    for value in PLANTED.values():
        assert value not in "\n".join(lines)
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{value} in {path}"
