"""The Python API in-process, as a user writes it: PPO / TRPO objects with learn, predict,
save and load, callbacks, env instances, and the same scalars as the CLI."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_envs_given_as_an_instance_a_callable_or_a_vector_env(tmp_path):
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
        rl_trust.PPO(gym.make_vec("CartPole-v1", num_envs=2), run_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written for a model never built


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


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's "Use it from Python" example, on a smaller budget."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## Use it from Python") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 10)]
    assert "model.learn(100_000" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace("100_000", "2_048"), "README.md", "exec"), scope)
    assert isinstance(scope["model"], rl_trust.PPO) and scope["model"].num_timesteps >= 2048
    assert (tmp_path / "my-cartpole" / "config.yaml").is_file()


def test_predict_normalizes_with_frozen_statistics_and_a_save_load_round_trip_acts_alike(
    tmp_path,
):
    model = rl_trust.PPO("Pendulum-v1", run_dir=False, normalize_obs=True, n_steps=256)
    model.learn(512)
    rms = model.trainer.learner.normalizer
    obs = np.stack([gym.make("Pendulum-v1").reset(seed=s)[0] for s in range(8)])
    expected = np.clip((obs - rms.obs_rms.mean) / np.sqrt(rms.obs_rms.var + 1e-8), -10, 10)
    with torch.no_grad():
        mean = model.policy.dist_params(torch.as_tensor(expected, dtype=torch.float32))[:, :1]
    actions, _ = model.predict(obs, deterministic=True)
    assert np.allclose(actions, np.clip(mean.numpy(), -2, 2), atol=1e-6)
    before = rms.obs_rms.mean.copy()
    model.predict(obs * 100)
    assert np.array_equal(rms.obs_rms.mean, before)  # frozen
    back = rl_trust.load(model.save(tmp_path / "saved"))
    assert np.array_equal(back.predict(obs, deterministic=True)[0], actions)


def test_a_preset_file_and_a_network_of_your_own_through_the_api(tmp_path, monkeypatch):
    (tmp_path / "mynet_api.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, n):\n"
        "        super().__init__()\n"
        "        self.latent_dim_pi = self.latent_dim_vf = 32\n"
        "        self.pi = nn.Sequential(nn.Linear(n, 32), nn.Tanh())\n"
        "        self.vf = nn.Sequential(nn.Linear(n, 32), nn.Tanh())\n"
        "    def forward(self, obs):\n"
        "        return self.pi(obs), self.vf(obs)\n"
        "def factory(observation_space, action_space):\n"
        "    return Net(observation_space.shape[0])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = tmp_path / "mine.yaml"
    preset.write_text("algo: ppo\nkl_penalty: adaptive\nclip: false\nn_steps: 256\n")
    model = rl_trust.PPO("CartPole-v1", preset=str(preset), run_dir=tmp_path / "run",
                         policy="mynet_api:factory").learn(512)  # fmt: skip
    assert model.config.agent_name == "mine" and not model.config.agent.clip
    assert type(model.policy.extractor).__name__ == "Net"
    again = rl_trust.load(tmp_path / "run")
    obs = np.zeros((3, 4), np.float32)
    assert np.array_equal(again.predict(obs, True)[0], model.predict(obs, True)[0])
    with pytest.raises(ValueError, match="mynet_missing"):
        rl_trust.PPO("CartPole-v1", run_dir=False, policy="mynet_missing:factory")
