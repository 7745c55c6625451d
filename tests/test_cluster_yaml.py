"""cluster.yaml passes Ray's own validator (offline) and keeps the properties the sweep relies on."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_ray_validator_accepts_it(config: dict) -> None:
    _validate(config)


def test_ray_validator_rejects_an_unknown_key(config: dict) -> None:
    import jsonschema

    broken = dict(config, gpu_count=8)
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


def test_node_types(config: dict) -> None:
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["trial_driver"] > 0 and "GPU" not in head["resources"]
    gpu_types = [t for n, t in types.items() if n != config["head_node_type"]]
    assert gpu_types and all(isinstance(t["resources"]["GPU"], int) and t["resources"]["GPU"] >= 1 for t in gpu_types)
    assert all(isinstance(v, int) for t in types.values() for v in t["resources"].values())


def test_head_starts_ray_with_driver_resource_and_mlflow_on_localhost(config: dict) -> None:
    cmds = " ".join(config["head_start_ray_commands"])
    assert "trial_driver" in cmds and "ray start --head" in cmds
    assert "mlflow server" in cmds and "--host 127.0.0.1" in cmds and "--workers 1" in cmds
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in cmds


def test_setup_installs_this_project_and_mounts_shared_storage(config: dict) -> None:
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "~/robustify" in setup and "/mnt/shared" in setup
    assert config["file_mounts"]["~/robustify"] == "."


def test_no_credentials_in_the_file() -> None:
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)aws_secret_access_key|aws_access_key_id|ssh_private_key", text)
