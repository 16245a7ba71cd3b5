"""`babysit submit --slurm / --kuberay`: complete, valid files from --dry-run, and one-line
errors when the cluster's tool is missing or refuses the job."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from orchestrator.cluster.submission import CLUSTER_DIR
from orchestrator.study.spec import load_spec, parse_spec
from tests.conftest import assert_one_line_error, babysit_here
from tests.orchestrator.study.test_model_files import NETS


def test_slurm_dry_run_prints_a_valid_sbatch_script_with_the_requested_nodes(tmp_path, cache_dir):
    spec = tmp_path / "faces.yaml"
    spec.write_text(load_spec("faces").to_yaml())
    study = tmp_path / "studies" / "faces-demo"
    proc = babysit_here(
        "submit", spec, "--slurm", "--dry-run", "--nodes", "3", "--gpus-per-node", "2",
        "--partition", "gpu", "--account", "ml", "--time", "02:00:00", "--budget", "demo",
        "--data", "/shared/faces.tar.gz", "--study-dir", study, "--fuse", "8", cache=cache_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    for line in ("--nodes=3", "--gpus-per-node=2", "--partition=gpu", "--account=ml"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --time=02:00:00\n" in script and "#SBATCH --requeue\n" in script
    assert "{{" not in script and "--num-gpus=2 --block" in script
    assert "< 3:" in script  # waits for all three nodes
    assert "export RAY_AUTH_MODE=token\n" in script
    assert f"export RAY_AUTH_TOKEN_PATH={study}/.ray-auth-token\n" in script
    assert f"PYTHON={sys.executable}\n" in script
    run = script.strip().splitlines()[-1]
    assert run.startswith(f'"$PYTHON" -m orchestrator run {spec} --study-dir {study}')
    assert "--budget demo --data /shared/faces.tar.gz --fuse 8 --gpus-per-trial 0.25" in run
    assert "--gpus-per-trial 0.25" in proc.stderr  # GPU nodes: trials share the GPUs
    assert not study.exists()  # a dry run writes nothing


def test_kuberay_dry_run_prints_a_configmap_and_a_rayjob(tmp_path, cache_dir):
    proc = babysit_here(
        "submit", "faces", "--kuberay", "--dry-run", "--workers", "3", "--gpus-per-worker", "2",
        "--image", "registry.example/babysitter:0.1.0", "--budget", "smoke",
        "--tracking-uri", "http://mlflow.ml:5000", cache=cache_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config_map, job = yaml.safe_load_all(proc.stdout)
    assert config_map["kind"] == "ConfigMap"
    shipped = parse_spec(config_map["data"]["spec.yaml"], "configmap")
    assert shipped.name == "faces" and shipped.resources.gpus_per_trial == 0.25
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"] == "babysit-faces-smoke"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m orchestrator run /etc/babysitter/spec.yaml")
    assert "--study-dir /studies/faces-smoke --budget smoke" in spec["entrypoint"]
    assert "--tracking-uri http://mlflow.ml:5000" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["authOptions"] == {"mode": "token"}
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    (container,) = workers["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/babysitter:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/studies", "/data"}
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert {v["name"] for v in head["volumes"]} == {"spec", "studies", "data"}


def test_kuberay_carries_a_users_model_file_to_the_head_in_the_configmap(tmp_path, cache_dir):
    net = tmp_path / "my net.py"  # a name the ConfigMap key cannot hold as it is
    net.write_text(NETS.read_text())
    spec = tmp_path / "mine.yaml"
    spec.write_text(f"trial: {{dataset: faces, data: /data/faces.tar.gz, model: '{net}:mlp'}}\n")
    proc = babysit_here("submit", spec, "--kuberay", "--dry-run", cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    config_map, _ = yaml.safe_load_all(proc.stdout)
    assert set(config_map["data"]) == {"spec.yaml", "my_net.py"}
    assert config_map["data"]["my_net.py"].rstrip("\n") == net.read_text().rstrip("\n")
    shipped = parse_spec(config_map["data"]["spec.yaml"], "configmap")
    assert shipped.trial["model"] == "/etc/babysitter/my_net.py:mlp"


def test_submit_errors_are_one_line_and_write_nothing(tmp_path, cache_dir):
    assert_one_line_error(babysit_here("submit", "faces", cache=cache_dir), "--slurm or --kuberay")
    both = babysit_here(
        "submit", "faces", "--slurm", "--address", "http://127.0.0.1:1", cache=cache_dir
    )
    assert_one_line_error(both, "one place")
    study = tmp_path / "study"
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "BABYSITTER_CACHE": str(cache_dir)}
    for where, tool in (("--slurm", "sbatch"), ("--kuberay", "kubectl")):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "submit", "faces", where, "--study-dir", study],
            capture_output=True,
            text=True,
            env=env,
        )
        assert_one_line_error(proc, f"{tool} is not on PATH", "--dry-run")
    assert not study.exists()


def test_slurm_submission_hands_the_script_to_sbatch_and_names_the_job(tmp_path, cache_dir):
    """No SLURM here: a stand-in sbatch on PATH records what it was given and answers as the
    real one does (`Submitted batch job N`), or refuses like a full queue."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\n"
        'if [ -n "$REFUSE" ]; then\n'
        '  echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1\n'
        "fi\n"
        'echo "$1" > "$(dirname "$0")/args"\n'
        'echo "Submitted batch job 4242"\n'
    )
    sbatch.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    study = tmp_path / "study"
    command = [sys.executable, "-m", "orchestrator", "submit", "faces", "--slurm"]
    command += ["--study-dir", str(study)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Submitted batch job 4242" in proc.stdout and "squeue -j 4242" in proc.stdout
    assert (bin_dir / "args").read_text().strip() == str(study / "babysit.sbatch")
    assert (study / "babysit.sbatch").read_text().startswith("#!/bin/bash")
    refused = subprocess.run(command, capture_output=True, text=True, env={**env, "REFUSE": "1"})
    assert_one_line_error(refused, "sbatch refused the job", "QOSMaxSubmitJobPerUserLimit")


def test_plain_http_to_another_machine_without_a_token_is_refused_before_sending(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    command = [sys.executable, "-m", "orchestrator", "submit", "faces"]
    command += ["--address", "http://10.255.0.1:8265", "--study-dir", str(tmp_path / "s")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert_one_line_error(proc, "plain http to another machine", "--allow-insecure")
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "jobs",
            "list",
            "--address",
            "http://10.255.0.1:8265",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert_one_line_error(listed, "plain http to another machine")


def test_the_cluster_launcher_config_has_gpu_workers_token_auth_and_shared_storage():
    config = yaml.safe_load((CLUSTER_DIR / "aws-gpu.yaml").read_text())
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] >= 1 and config["head_node_type"] == "head"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert any("/shared" in c for c in config["setup_commands"])
