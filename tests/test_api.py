"""The Python API in-process, as a user writes it: PPO / TRPO objects with learn, predict,
save and load, callbacks, env instances, and the same scalars as the CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cli, events, scalars

import rl_trust
from rl_trust import checkpoint

SMALL = {"n_steps": 256, "batch_size": 64, "n_epochs": 2}


def test_the_api_and_the_cli_give_bit_identical_scalars(tmp_path):
    res = cli("train", "--steps", "1024", "--seed", "3", "--run-dir", str(tmp_path / "cli"),
              "--no-progress", *[f"--set={k}={v}" for k, v in SMALL.items()])  # fmt: skip
    assert res.returncode == 0, res.stderr
    rl_trust.PPO("CartPole-v1", seed=3, run_dir=tmp_path / "api", **SMALL).learn(1024)
    ours, theirs = events(tmp_path / "api"), events(tmp_path / "cli")
    tags = ours.Tags()["scalars"]
    assert "kl/forward_mean" in tags and sorted(tags) == sorted(theirs.Tags()["scalars"])
    for tag in tags:
        if tag != "time/fps":
            assert scalars(ours, tag) == scalars(theirs, tag), tag
    assert (tmp_path / "api" / "config.yaml").read_text() == (
        tmp_path / "cli" / "config.yaml"
    ).read_text()


def test_learn_continues_and_a_callback_sees_every_update_and_can_stop(tmp_path):
    model = rl_trust.PPO("CartPole-v1", run_dir=tmp_path / "run", **SMALL)
    assert model.learn(512) is model and model.num_timesteps == 512
    model.learn(300)  # whole rollouts: the first at or past 812
    assert model.num_timesteps == 1024
    seen = []

    def callback(metrics, trainer):
        seen.append((trainer.learner.step, metrics["kl/forward_mean"]))
        return len(seen) < 2

    model.learn(10_000, callback=callback)
    assert [s for s, _ in seen] == [1280, 1536] and model.num_timesteps == 1536
    assert checkpoint.step_of(checkpoint.list_checkpoints(tmp_path / "run")[-1]) == 1536
    logged = scalars(events(tmp_path / "run"), "kl/forward_mean")
    assert sorted(logged) == list(range(256, 1537, 256))  # one series over three learn calls
    assert logged[1536] == pytest.approx(seen[-1][1])


def test_predict_takes_one_observation_or_a_batch_and_clips_to_the_box():
    model = rl_trust.TRPO("Pendulum-v1", run_dir=False, n_steps=256, log_std_init=3.0)
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs)
    assert state is None and action.shape == (1,) and env.action_space.contains(action)
    batch = np.stack([obs] * 64)
    actions, _ = model.predict(batch)  # σ = e³: most samples fall outside [−2, 2]
    assert actions.shape == (64, 1) and np.abs(actions).max() == pytest.approx(2.0)
    same, _ = model.predict(batch, deterministic=True)
    assert np.all(same == same[0])
    with pytest.raises(ValueError, match="expected"):
        model.predict(np.zeros(5))


def test_envs_given_as_an_instance_a_callable_or_a_vector_env():
    for env in (gym.make("CartPole-v1"), lambda: gym.make("CartPole-v1")):
        model = rl_trust.PPO(env, run_dir=False, n_envs=2, **SMALL).learn(512)
        assert model.env.num_envs == 2 and model.num_timesteps == 512
        assert model.config.env.env_id == ("CartPole-v1" if isinstance(env, gym.Env) else "custom")
    same_step = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    vec = gym.make_vec(
        "CartPole-v1", num_envs=3, vectorization_mode="sync", vector_kwargs=same_step
    )
    model = rl_trust.PPO(vec, run_dir=False, **SMALL).learn(768)
    assert model.config.env.n_envs == 3 and model.num_timesteps == 768
    with pytest.raises(ValueError, match="SAME_STEP"):
        rl_trust.PPO(gym.make_vec("CartPole-v1", num_envs=2), run_dir=False)


def test_config_values_are_validated_as_the_cli_validates_them():
    with pytest.raises(TypeError, match="n_steps='x' is not valid"):
        rl_trust.PPO("CartPole-v1", run_dir=False, n_steps="x")
    with pytest.raises(ValueError, match="learning_rate=-1.0 is out of range"):
        rl_trust.PPO("CartPole-v1", run_dir=False, learning_rate=-1.0)
    with pytest.raises(ValueError, match="unknown key 'n_step'"):
        rl_trust.PPO("CartPole-v1", run_dir=False, n_step=64)
    with pytest.raises(ValueError, match="use rl_trust.TRPO"):
        rl_trust.PPO("CartPole-v1", preset="trpo", run_dir=False)
    with pytest.raises(TypeError, match="total_timesteps"):
        rl_trust.PPO("CartPole-v1", run_dir=False).learn("many")


def test_a_python_saved_model_resumes_and_evaluates_from_the_cli(tmp_path):
    model = rl_trust.TRPO("CartPole-v1", run_dir=False, n_steps=256).learn(512)
    run = model.save(tmp_path / "saved")
    res = cli("resume", str(run), "--steps", "1024", "--no-progress")
    assert res.returncode == 0, res.stderr
    res = cli("eval", str(run), "--episodes", "2", "--deterministic")
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "eval.json").read_text())["step"] == 1024
    back = rl_trust.load(run)
    assert isinstance(back, rl_trust.TRPO) and back.num_timesteps == 1024


def test_a_cli_run_loads_in_python_and_continues(ppo_run, tmp_path):
    model = rl_trust.load(checkpoint.list_checkpoints(ppo_run)[-1], env="CartPole-v1")
    obs, _ = gym.make("CartPole-v1").reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert action in (0, 1)
    copy = model.save(tmp_path / "copy")
    again = rl_trust.PPO.load(copy)
    assert torch.equal(
        torch.cat([p.flatten() for p in again.policy.parameters()]),
        torch.cat([p.flatten() for p in model.policy.parameters()]),
    )
    again.learn(512)
    assert again.num_timesteps == model.num_timesteps + 512


def test_the_policy_is_a_torch_module_that_exports():
    model = rl_trust.PPO("CartPole-v1", run_dir=False)
    obs = torch.zeros(1, 4)
    program = torch.export.export(model.policy, (obs,))
    for exported, own in zip(program.module()(obs), model.policy(obs), strict=True):
        assert torch.equal(exported, own)  # distribution parameters, then values
