"""A user's model file lives on in the study folder: what the study trains is its copy, and a
study folder never mixes two versions of the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from orchestrator.study.model_files import relocated, user_files
from orchestrator.study.spec import parse_spec
from tests.conftest import FACES, QUICK, assert_one_line_error, babysit_here

NETS = Path(__file__).parents[2] / "fixtures" / "models" / "nets.py"


def test_every_file_a_spec_names_gets_one_copy_named_after_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spec = parse_spec(
        f"""
trial: {{dataset: faces, data: {FACES}, model: "a/net.py:mlp"}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
  model: {{choice: ["a/net.py:small_resnet", "{tmp_path}/b/net.py:mlp", torchvision.resnet18]}}
""",
        "spec",
    )
    files = user_files(spec)
    assert len(files) == 2 and all(name.startswith("net") for name in files)  # two, not three
    moved = relocated(spec, Path("/study/code"))
    assert moved.trial["model"].startswith("/study/code/net") and moved.trial["data"] == str(FACES)
    choices = moved.search_space["model"]["choice"]
    assert choices[2] == "torchvision.resnet18"
    assert {c.rpartition(":")[0] for c in choices[:2]} == {f"/study/code/{n}" for n in files}


SPEC = """
name: mine
trial: {{dataset: faces, data: {data}, train_subset: 300, threads: 1, model: {net}:mlp}}
search_space:
  lr: {{loguniform: [1.0e-3, 1.0e-1]}}
"""


def test_a_study_trains_its_copy_and_refuses_a_changed_file_in_one_line(tmp_path, cache_dir):
    net = Path(shutil.copy(NETS, tmp_path / "net.py"))
    spec = tmp_path / "mine.yaml"
    spec.write_text(SPEC.format(data=FACES, net=net) + QUICK)
    study = tmp_path / "study"
    proc = babysit_here("sanity", spec, "--study-dir", study, cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    copy = study.absolute() / "code" / "net.py"
    saved = yaml.safe_load((study / "spec.yaml").read_text())
    assert saved["trial"]["model"] == f"{copy}:mlp" and copy.read_bytes() == NETS.read_bytes()

    net.write_text(net.read_text() + "\n# changed\n")
    before = (study / "spec.yaml").read_text(), (study / "study.json").read_text()
    proc = babysit_here("sanity", spec, "--study-dir", study, cache=cache_dir)
    assert_one_line_error(proc, "net.py", "has changed since", "babysit resume")
    assert ((study / "spec.yaml").read_text(), (study / "study.json").read_text()) == before
    assert copy.read_bytes() == NETS.read_bytes()
