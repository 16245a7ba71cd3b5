from pathlib import Path

import pytest
import ray

from orchestrator.cluster.ray_runtime import (
    check_shared_storage,
    nodes_not_seeing,
    shared_storage_problem,
)


@pytest.mark.slow
def test_each_node_is_asked_whether_it_sees_a_path(local_ray, tmp_path):
    node = ray.get_runtime_context().get_node_id()
    assert nodes_not_seeing(tmp_path, [node]) == []
    assert nodes_not_seeing(tmp_path / "written-on-another-machine", [node]) == [node]
    assert check_shared_storage(tmp_path / "study") == 0  # one node: nothing to share
    assert list(tmp_path.iterdir()) == []


def test_a_study_folder_some_nodes_cannot_see_is_refused_naming_them_and_the_fix():
    blind = ["5f2a9c1e7d3b4a6f8e0c", "0b1c2d3e4f5a6b7c8d9e"]
    line = shared_storage_problem(Path("/scratch/study"), blind, 3)
    assert line == (
        "--study-dir /scratch/study: 2 of 3 Ray nodes cannot see it (node 5f2a9c1e7d3b, "
        "0b1c2d3e4f5a); put the study folder on storage every node mounts at the same path "
        "(NFS, a shared volume)"
    )
    assert shared_storage_problem(Path("/shared/study"), [], 3) is None
