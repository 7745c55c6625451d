"""cluster.yaml is what `ray up` runs as written once its FILL_ME values are filled in: Ray's own validator
accepts it (offline), nothing is left for a substitution the launcher never makes, its node types fit every sweep's
paper profile, and it keeps the properties the sweep relies on. The rig (tests/rig.py) runs its start commands."""

from __future__ import annotations

import copy
import glob
import re
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster_config import main as check_main
from orchestrator.cluster_config import unfilled

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()
FILLED = (
    TEXT.replace("FILL_ME_YOUR_PUBLIC_IP", "203.0.113.7")
    .replace("FILL_ME_AMI_ID", "ami-0a1b2c3d4e5f60718")
    .replace("FILL_ME_EFS_ID", "fs-0123456789abcdef0")
)


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(FILLED)


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_ray_validator_accepts_it_filled_in(config: dict) -> None:
    _validate(config)


def test_ray_validator_rejects_an_unknown_key(config: dict) -> None:
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        _validate(dict(config, gpu_count=8))


def test_the_shipped_file_names_its_values_to_fill_and_the_check_refuses_it(tmp_path: Path, capsys) -> None:
    assert sorted({tok for _, tok in unfilled(TEXT)}) == ["FILL_ME_AMI_ID", "FILL_ME_EFS_ID", "FILL_ME_YOUR_PUBLIC_IP"]
    assert check_main([str(ROOT / "cluster.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FILL_ME_EFS_ID" in err and "line " in err
    ready = tmp_path / "cluster.yaml"
    ready.write_text(FILLED)
    assert unfilled(FILLED) == [] and check_main([str(ready)]) == 0


def test_a_launcher_substitution_left_in_is_refused(tmp_path: Path) -> None:
    """The launcher passes no environment to nodes: ${ROBUSTIFY_EFS_ID} would mount '.efs...amazonaws.com'."""
    old = FILLED.replace("fs-0123456789abcdef0", "${ROBUSTIFY_EFS_ID}")
    line = next(n for n, ln in enumerate(old.splitlines(), 1) if "${ROBUSTIFY" in ln)
    assert unfilled(old) == [(line, "${ROBUSTIFY_EFS_ID}")]
    bad = tmp_path / "cluster.yaml"
    bad.write_text(old)
    assert check_main([str(bad)]) == 2
    assert not [tok for _, tok in unfilled(TEXT) if tok.startswith("${")]


def test_node_types_fit_every_paper_profile(config: dict) -> None:
    from orchestrator.spec import load_spec

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["trial_driver"] > 0 and "GPU" not in head["resources"]
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert all(isinstance(v, int) for t in types.values() for v in t["resources"].values())
    for path in sorted(glob.glob(str(ROOT / "sweeps" / "*.yaml"))):
        r = load_spec(path, "paper", []).resources
        fits = [
            t
            for t in workers
            if t["resources"].get("CPU", 0) >= r.cpus_per_worker
            and t["resources"].get("GPU", 0) >= r.gpus_per_worker
            and t["max_workers"] * max(1, int(t["resources"].get("GPU", 0) // max(r.gpus_per_worker, 1e-9)))
            >= r.workers_per_trial
        ]
        assert fits, f"{path}: no worker node type fits {r.workers_per_trial} x ({r.cpus_per_worker} CPU, GPU)"


def test_head_starts_ray_and_mlflow_reachable_by_workers(config: dict) -> None:
    cmds = " ".join(config["head_start_ray_commands"])
    assert "trial_driver" in cmds and "ray start --head" in cmds
    assert "mlflow server" in cmds and "--host 0.0.0.0" in cmds and "--workers 1" in cmds
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in cmds
    assert "pkill" not in cmds, "pkill -f 'mlflow server' matches the launcher's own shell running the line"
    assert "sqlite:///$HOME/" in cmds, "SQLite on the head's own disk, not on NFS"


def test_setup_installs_python311_system_libs_project_and_mounts_efs(config: dict) -> None:
    setup = " ".join(config["setup_commands"])
    assert "python3.11 -m venv ~/venv" in setup and "pip install -q -e ~/robustify" in setup
    assert all(lib in setup for lib in ("libgl1", "libglib2.0-0", "nfs-common"))
    region = config["provider"]["region"]
    assert f".efs.{region}.amazonaws.com:/ /mnt/shared" in setup
    assert "boto3" in " ".join(config["head_setup_commands"])
    assert "ssm get-parameter" in TEXT and "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" in TEXT


def test_rsync_uploads_only_the_project(config: dict) -> None:
    assert config["file_mounts"]["~/robustify"] == "."
    assert config["rsync_filter"] == [".gitignore"]
    assert {".venv", ".git", "runs"} <= set(config["rsync_exclude"])


def test_ssh_is_restricted_to_one_address(config: dict) -> None:
    rules = config["provider"]["security_group"]["IpPermissions"]
    ssh = [r for r in rules if r["FromPort"] <= 22 <= r["ToPort"]]
    cidrs = [ip["CidrIp"] for r in ssh for ip in r["IpRanges"]]
    assert cidrs == ["203.0.113.7/32"] and "0.0.0.0/0" not in str(rules)


def test_no_credentials_in_the_file() -> None:
    assert not re.search(r"AKIA[0-9A-Z]{16}", TEXT)
    assert not re.search(r"(?i)aws_secret_access_key|aws_access_key_id|ssh_private_key", TEXT)
