"""sweeps/config.py: every shipped config parses; overrides work; bad values name key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps.config import CONFIG_DIR, ConfigError, load_config, parse_config

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_parse_and_comment_every_value(path):
    cfg = load_config(path)
    assert cfg.name and len(cfg.arms) >= 2
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# {path.name}:"), "each config opens with what it is for"
    for line in lines:
        code = line.split("#")[0]
        if ":" in code and code.split(":", 1)[1].strip() not in ("", "|"):
            assert "#" in line, f"{path.name}: value without a comment: {line!r}"


def test_default_config_is_the_fair_cifar10_search():
    cfg = load_config()
    assert cfg.data.source == "cifar10" and [a.activation for a in cfg.arms] == ["relu", "selu"]
    space = {p.name: p for p in cfg.search.space}
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (1e-4, 1e-2, True)
    assert list(space) == ["lr"] and cfg.search.replicates >= 3
    assert cfg.train.batch_size == 100
    assert not cfg.search.early_stopping.enabled, (
        "every trial trains to max_epochs: on CIFAR-10 a halving rung before ~epoch 15 ranks lr by speed")
    assert cfg.search.mode == "stratified" and cfg.data.validate_on == "val"


def test_default_search_reads_epochs_off_the_curve_with_every_trial_from_the_shared_design():
    s = load_config().search
    assert (s.objective, s.metric, s.max_epochs) == ("best", "best_val_accuracy", 20)
    assert s.n_startup_trials is None and s.startup_trials == s.num_samples, "all T trials from the design"
    assert not s.reference_point, "no privileged trial in the stratified search"
    assert s.early_stopping.grace_period == 1
    assert load_config().max_epochs() == 20
    assert load_config(CONFIG_DIR / "blog.yaml").max_epochs() == 50, "no search: train.epochs"


def test_startup_trials_are_capped_at_the_trials_per_cell():
    assert load_config(overrides=["search.n_startup_trials=3"]).search.startup_trials == 3
    assert load_config(overrides=["search.n_startup_trials=30"]).search.startup_trials == 4
    assert load_config(overrides=["search.n_startup_trials=0"]).search.startup_trials == 0


def test_joint_mode_may_keep_the_reference_point():
    cfg = load_config(overrides=["search.mode=joint", "search.reference_point=true"])
    assert cfg.search.reference_point


def test_blog_config_is_the_original_experiment():
    cfg = load_config(CONFIG_DIR / "blog.yaml")
    assert not cfg.search.enabled and cfg.confirm.seeds == 3
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (1e-3, 50, 100)
    assert cfg.train.kernel_initializer == "glorot_uniform" and cfg.train.normalization == "scale"
    assert cfg.data.validate_on == "test" and cfg.data.val_size == 0
    for arm in cfg.arms:
        assert arm.settings(cfg.train)["kernel_initializer"] == "glorot_uniform"


def test_selu_paper_adds_selu_done_right():
    cfg = load_config(CONFIG_DIR / "selu-paper.yaml")
    right = cfg.arm("selu-done-right").settings(cfg.train)
    assert right == {"arm": "selu-done-right", "activation": "selu", "kernel_initializer": "lecun_normal",
                     "normalization": "standardize", "dropout": 0.05}
    assert cfg.arm("selu").settings(cfg.train)["kernel_initializer"] == "glorot_uniform"


def test_set_overrides_any_value_with_yaml_typing():
    cfg = load_config(overrides=["search.num_samples=3", "resources.gpus_per_trial=0.125",
                                 "arms.1.activation=gelu", "search.space.lr.high=3e-2", "name=x"])
    assert cfg.search.num_samples == 3 and cfg.resources.gpus_per_trial == 0.125
    assert cfg.arms[1].activation == "gelu" and cfg.name == "x"
    assert {p.name: p for p in cfg.search.space}["lr"].high == 0.03


@pytest.mark.parametrize("override, message", [
    ("search.num_samples", "expected KEY=VALUE"),
    ("arms.9.activation=relu", "not an index"),
    ("name.sub=1", "is a value, not a section"),
    ("search.num_samplez=3", "did you mean 'search.num_samples'"),
])
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIG_DIR / "selu-paper.yaml")
    again = parse_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


CORPUS = sorted((Path(__file__).parent / "bad_configs").glob("*.yaml"))


def _expected(path: Path) -> str:
    return path.read_text().splitlines()[0].removeprefix("# expect:").strip()


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_config_corpus_is_refused_with_its_message(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert _expected(path) in message and "\n" not in message
