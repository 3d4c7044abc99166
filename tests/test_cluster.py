"""cluster.yaml: valid against Ray's cluster-config schema, and wired for this project."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # `ray up` does the same; raises on any violation


def test_cluster_yaml_keeps_trials_off_the_head_and_installs_the_project():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any('pip install -e ".[gpu]"' in c for c in config["setup_commands"])
    assert config["available_node_types"]["gpu_worker"]["min_workers"] >= 1
