"""Image, Dict and Tuple observations through the CLI, as a user meets them: the probe envs
are learned within a few thousand steps (a random policy earns 0.5 per episode), Blackjack's
Tuple observations train, and a run resumes, evaluates (with video) and predicts."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cli

import rl_trust
from rl_trust import agents
from rl_trust.config import EnvConfig, PPOConfig
from rl_trust.envs import Normalizer, make_vec
from rl_trust.rollout import Collector

SHORT = (
    "--agent ppo-clip --steps 4096 --set n_steps=256 --set "
    "batch_size=64 --set n_epochs=4 --no-progress"
).split()


def train(root: Path, env_id: str, *extra: str) -> tuple[Path, dict]:
    res = cli("train", "--env", env_id, *SHORT, *extra, "--runs-root", str(root))
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    return run, json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory) -> tuple[Path, dict]:
    return train(tmp_path_factory.mktemp("runs"), "rl_trust/PixelColor-v0")


@pytest.fixture(scope="module")
def pixel_run_bfloat16(tmp_path_factory) -> tuple[Path, dict]:
    return train(
        tmp_path_factory.mktemp("runs"), "rl_trust/PixelColor-v0", "--set", "precision=bfloat16"
    )


@pytest.fixture(scope="module")
def dict_run(tmp_path_factory) -> tuple[Path, dict]:
    return train(
        tmp_path_factory.mktemp("runs"), "rl_trust/DictCue-v0", "--set", "normalize_obs=true"
    )


@pytest.mark.parametrize("fixture", ["pixel_run", "pixel_run_bfloat16", "dict_run"])
def test_probe_is_learned(fixture, request):
    """One pixel's colour (through the Nature CNN, in float32 or mixed bfloat16), or one key
    of a Dict, decides the rewarded action: the last 100 episodes of 4096 steps are nearly
    all right."""
    run, summary = request.getfixturevalue(fixture)
    assert summary["steps"] == 4096
    assert summary["final"]["rollout/ep_rew_mean"] >= 0.9
    cfg = (run / "config.yaml").read_text()
    assert "engine: auto" in cfg


def test_image_run_resumes_evaluates_and_predicts(pixel_run):
    run, _ = pixel_run
    res = cli("resume", str(run), "--steps", "4608", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 4608
    res = cli("eval", str(run), "--episodes", "20", "--deterministic", "--video")
    assert res.returncode == 0, res.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["mean_return"] >= 0.9 and len(result["videos"]) == 20
    assert all(Path(v).stat().st_size > 0 for v in result["videos"])

    model = rl_trust.load(run)
    env = gym.make("rl_trust/PixelColor-v0")
    obs = np.stack([env.reset(seed=s)[0] for s in range(20)])
    green = np.array([int(o[17, 21, 1] == 255) for o in obs])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (20,) and (actions == green).mean() >= 0.9
    one, _ = model.predict(obs[0], deterministic=True)
    assert one == actions[0]
    model.close()


def test_dict_run_resumes_evaluates_and_predicts(dict_run):
    run, _ = dict_run
    res = cli("resume", str(run), "--steps", "4608", "--no-progress")
    assert res.returncode == 0, res.stderr
    res = cli("eval", str(run), "--episodes", "20", "--deterministic", "--video")
    assert res.returncode == 0, res.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["mean_return"] >= 0.9 and len(result["videos"]) == 20
    model = rl_trust.load(run)
    noise = np.zeros((2, 4), np.float32)
    actions, _ = model.predict({"cue": np.array([1, 0]), "noise": noise}, deterministic=True)
    assert actions.tolist() == [1, 0]
    one, _ = model.predict({"cue": 1, "noise": noise[0]}, deterministic=True)
    assert one == 1
    with pytest.raises(ValueError, match="parts"):
        model.predict({"noise": noise})
    model.close()


def test_blackjack_tuple_observations_train(tmp_path):
    """Blackjack-v1: a Tuple of three Discretes, each one-hot, concatenated; PPO and TRPO."""
    for agent in ("ppo", "trpo"):
        args = ["--steps", "2048", "--set", "n_steps=512", "--no-progress"]
        res = cli(
            "train", "--agent", agent, "--env", "Blackjack-v1", *args, "--runs-root", str(tmp_path)
        )
        assert res.returncode == 0, res.stderr
        run = Path(res.stdout.strip().splitlines()[-1])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 2048 and summary["episodes"] > 100
        res = cli("eval", str(run), "--episodes", "5")
        assert res.returncode == 0, res.stderr


def test_rollout_buffer_keeps_uint8_pixels():
    """The rollout stores the env's pixels as they are (uint8, not a float32 copy), and
    hands them to the update as uint8."""
    env = make_vec(EnvConfig(env_id="rl_trust/PixelColor-v0", n_envs=2), 0)
    agent = agents.build(
        PPOConfig(n_steps=8), env.single_observation_space, env.single_action_space, 0
    )
    norm = Normalizer(
        agent.policy.obs_layout.norm_shape,
        2,
        obs=True,
        reward=False,
        gamma=0.99,
        clip_obs=10.0,
        clip_reward=10.0,
    )
    collector = Collector(env, agent.policy, norm, 8, 0.99, 0.95, 0)
    batch = collector.collect()
    assert collector.obs.dtype == np.uint8 and collector.obs.shape == (8, 2, 36, 36, 3)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (16, 36, 36, 3)
    # one lit pixel per image, 255 in the red or the green channel
    lit = collector.obs.reshape(16, -1)
    assert (lit.max(1) == 255).all() and (lit.astype(np.int64).sum(1) == 255).all()
    assert collector.obs[:, :, 17, 21, :2].max(-1).min() == 255
    env.close()
