"""The config reference: every field of every config class has a one-line description, and
`rl-trust config --explain` prints each key with its value, default and description."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import cli

from rl_trust import config

CLASSES = [config.RunSettings, config.EnvConfig, config.PPOConfig, config.TRPOConfig]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_one_line_description(cls):
    docs = config.describe(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert [n for n in names if not docs.get(n, "").strip()] == []
    assert all("\n" not in docs[n] and len(docs[n]) <= 100 for n in names)
    if cls is config.TRPOConfig:  # a field it redefines has its own text
        assert docs["learning_rate"] != config.describe(config.PPOConfig)["learning_rate"]


def test_config_explain_prints_every_key_with_value_default_and_description():
    res = cli("config", "--agent", "trpo", "--env", "Hopper-v5", "--explain")
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.startswith("  ")}
    cfg = config.load("trpo", "Hopper-v5", {})
    assert set(lines) == set(cfg.flat())
    # Hopper's preset: normalized observations (not the default), trpo's own δ for it
    assert lines["normalize_obs"].split()[1:4] == ["true", "*", "default"]
    assert "running mean and variance" in lines["normalize_obs"]
    delta = cfg.agent.target_kl
    assert lines["target_kl"].split()[1] == str(delta) and "δ" in lines["target_kl"]
    assert lines["seed"].split()[1:3] == ["0", "default"]
