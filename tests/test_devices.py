"""Devices: every tensor an agent, its KL controller, the rollout's batch and the update's
statistics make lives on the policy's device, for the CPU always and for CUDA where torch
sees one; every agent preset trains, resumes and evaluates with device=cuda from the CLI;
and what device=auto picks for each engine (scripts/device_check.sh runs this file on a
GPU machine)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import cli

from rl_trust import agents, config
from rl_trust.envs import Normalizer
from rl_trust.envs.sync import SyncVectorEnv
from rl_trust.errors import UserError
from rl_trust.nets.build import make_policy
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.rollout import Collector

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", *(["cuda"] if CUDA else [])]
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
AGENTS = sorted(config.presets("agents"))


def env_for(agent: str, env_id: str = "Pendulum-v1") -> str:
    """env_id, or Hopper-v5 for a preset tuned for MuJoCo only (the zoo's)."""
    try:
        config.load(agent, env_id, {})
    except UserError:
        return "Hopper-v5"
    return env_id


def tensors(x, path="") -> list[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts, lists and tuples, with where it sits."""
    if isinstance(x, torch.Tensor):
        return [(path, x)]
    if isinstance(x, dict):
        return [t for k, v in x.items() for t in tensors(v, f"{path}.{k}")]
    if isinstance(x, list | tuple):
        return [t for i, v in enumerate(x) for t in tensors(v, f"{path}[{i}]")]
    return []


# every preset on a Box action; the default PPO and TRPO on a Discrete one and on pixels
CASES = [(agent, env_for(agent)) for agent in AGENTS] + [
    (agent, env_id)
    for agent in ("ppo", "ppo-clip", "trpo")
    for env_id in ("CartPole-v1", "rl_trust/PixelColor-v0")
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("agent", "env_id"), CASES)
def test_an_update_keeps_every_tensor_on_the_policys_device(agent, env_id, device):
    small = {"n_steps": 64, "batch_size": 32, "n_envs": 2}
    small.update(
        {"n_epochs": 2}
        if config.load(agent, env_id, {}).agent.algo == "ppo"
        else {"n_critic_updates": 2}
    )
    cfg = config.load(agent, env_id, {"device": device, "engine": "autograd", **small})
    env = SyncVectorEnv([lambda: gym.make(env_id)] * 2)
    learner = agents.build(cfg.agent, env.single_observation_space, env.single_action_space, 0)
    assert {p.device.type for p in learner.policy.parameters()} == {device}
    e = cfg.env  # (normalization on where the env preset asks for it)
    normalizer = Normalizer(
        learner.policy.obs_layout.norm_shape,
        2,
        obs=e.normalize_obs,
        reward=e.normalize_reward,
        gamma=0.99,
        clip_obs=e.clip_obs,
        clip_reward=e.clip_reward,
    )
    collector = Collector(env, learner.policy, normalizer, 64, 0.99, 0.95, seed=0)
    for _ in range(2):  # the second update sees the state the first left
        batch = collector.collect()
        placed = tensors(vars(batch)) + tensors(
            vars(batch.obs) if hasattr(batch.obs, "parts") else {}
        )
        assert placed and all(t.device.type == device for _, t in placed), placed
        metrics = learner.update(batch)
        for key, value in metrics.items():  # numbers, or tensors (histograms) on the device
            if isinstance(value, torch.Tensor):
                assert value.device.type == device and torch.isfinite(value).all(), key
            else:
                assert np.isfinite(value), key
    state = tensors(learner.state_dict())
    assert state and all(t.device.type == device for _, t in state), [
        (where, t.device) for where, t in state if t.device.type != device
    ]
    env.close()


def test_device_auto_keeps_the_mlp_on_the_cpu_and_sends_other_networks_to_a_gpu():
    """auto: the manual engine (the built-in MLP on vector observations) always on the CPU;
    the autograd engine (images, Dict/Tuple, your own network, bfloat16) on CUDA where torch
    sees it, else on the CPU."""
    vector = config.load("ppo", "CartPole-v1", {}).agent
    assert vector.device == "auto"
    box = gym.spaces.Box(-1.0, 1.0, (4,))
    assert type(make_policy(vector, box, gym.spaces.Discrete(2))) is MlpActorCritic
    pixels = gym.make("rl_trust/PixelColor-v0")
    policy = make_policy(vector, pixels.observation_space, pixels.action_space)
    assert policy.device.type == ("cuda" if CUDA else "cpu")
    forced = config.load("ppo", "CartPole-v1", {"device": "cpu"}).agent
    policy = make_policy(forced, pixels.observation_space, pixels.action_space)
    assert policy.device.type == "cpu"


@needs_cuda
@pytest.mark.parametrize("agent", AGENTS)
def test_every_preset_trains_resumes_and_evaluates_on_cuda(tmp_path, agent):
    run = tmp_path / "run"
    res = cli(
        "train",
        "--agent",
        agent,
        "--env",
        env_for(agent),
        "--steps",
        "512",
        "--set",
        "n_steps=128",
        "--set",
        "batch_size=64",
        "--set",
        "n_envs=2",
        "--set",
        "device=cuda",
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["agent"]["device"] == "cuda"
    res = cli("resume", str(run), "--steps", "1024", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 1024
    res = cli("eval", str(run), "--episodes", "2")
    assert res.returncode == 0, res.stderr
    assert json.loads(Path(run / "eval.json").read_text())["episodes"] == 2


@needs_cuda
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_pixels_train_on_cuda_in_either_precision(tmp_path, precision):
    run = tmp_path / "run"
    res = cli(
        "train",
        "--agent",
        "ppo-clip",
        "--env",
        "rl_trust/PixelColor-v0",
        "--steps",
        "512",
        "--set",
        "n_steps=64",
        "--set",
        "n_envs=4",
        "--set",
        "device=cuda",
        "--set",
        f"precision={precision}",
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    res = cli("resume", str(run), "--steps", "1024", "--no-progress")
    assert res.returncode == 0, res.stderr
    res = cli("eval", str(run), "--episodes", "2")
    assert res.returncode == 0, res.stderr
