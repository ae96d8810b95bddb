"""The Python API in-process, as a user writes it: PPO / TRPO objects with learn, predict,
save and load, callbacks, env instances, and the same scalars as the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cli, events, pythonpath, scalars

import rl_trust
from rl_trust import checkpoint

SMALL = {"n_steps": 256, "batch_size": 64, "n_epochs": 2}


def test_the_api_and_the_cli_give_bit_identical_scalars(tmp_path):
    res = cli(
        "train",
        "--steps",
        "1024",
        "--seed",
        "3",
        "--run-dir",
        str(tmp_path / "cli"),
        "--no-progress",
        *[f"--set={k}={v}" for k, v in SMALL.items()],
    )
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
    assert "None continues" in code and "**`None` continues**" in section
    exec(compile(code.replace("100_000", "2_048"), "README.md", "exec"), scope)
    assert isinstance(scope["model"], rl_trust.PPO) and scope["model"].num_timesteps >= 2048
    assert (tmp_path / "my-cartpole" / "config.yaml").is_file()
    # the run it saves opens without the env: in Python, and in `rl-trust eval` given it
    loaded = scope["model"]  # rl_trust.load("my-cartpole"), no env=
    assert loaded.get_env() is None and loaded.predict(scope["obs"])[0].shape == ()
    res = cli("eval", "my-cartpole", "--episodes", "1", cwd=tmp_path)
    assert res.returncode == 2 and "--env module:Class" in res.stderr, res.stderr
    upright = code[code.index("class Upright") : code.index("\n\n\ndef enough")]
    (tmp_path / "upright.py").write_text(
        "import gymnasium as gym\n"
        "from gymnasium.envs.classic_control import CartPoleEnv\n\n\n"
        f"{upright}\n\n\ndef make():\n    return gym.wrappers.TimeLimit(Upright(), 200)\n"
    )
    res = cli(
        "eval",
        "my-cartpole",
        "--episodes",
        "1",
        "--env",
        "upright:make",
        "--allow-import",
        cwd=tmp_path,
        env=pythonpath(tmp_path),
    )
    assert res.returncode == 0, res.stderr


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
    model = rl_trust.PPO(
        "CartPole-v1", preset=str(preset), run_dir=tmp_path / "run", policy="mynet_api:factory"
    ).learn(512)
    assert model.config.agent_name == "mine" and not model.config.agent.clip
    assert type(model.policy.extractor).__name__ == "Net"
    again = rl_trust.load(tmp_path / "run")
    obs = np.zeros((3, 4), np.float32)
    assert np.array_equal(
        again.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    with pytest.raises(ValueError, match="mynet_missing"):
        rl_trust.PPO("CartPole-v1", run_dir=False, policy="mynet_missing:factory")


# ---------------------------------------------------------------------------------------------
# issue 26: the Python API loses nothing and keeps SB3's habits

TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run folder (but its lock) and its bytes: what must stay as it was."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _tiny_run(path: Path, steps: int = 128, **values) -> Path:
    rl_trust.PPO("CartPole-v1", run_dir=path, **{**TINY, **values}).learn(steps)
    return path


def test_a_new_model_never_adopts_an_existing_run_folder(tmp_path):
    precious = _tiny_run(tmp_path / "precious")
    before = _files(precious)
    with pytest.raises(ValueError, match="already exists and holds a run") as e:
        rl_trust.TRPO("Pendulum-v1", run_dir=precious, n_steps=64)
    assert str(precious) in str(e.value) and "run_dir=" in str(e.value)
    assert "--run-dir" not in str(e.value)  # the API's words, not the CLI's
    assert _files(precious) == before
    res = cli("eval", str(precious), "--episodes", "1")
    assert res.returncode == 0, res.stderr


def test_the_same_script_run_twice_refuses_the_second_and_keeps_the_first(tmp_path):
    exp = tmp_path / "exp1"
    first = rl_trust.PPO(
        "CartPole-v1", seed=1, run_dir=exp, checkpoint_every=64, keep_checkpoints=2, **TINY
    ).learn(192)
    before = _files(exp)
    with pytest.raises(ValueError, match="exp1"):
        rl_trust.PPO("CartPole-v1", seed=2, run_dir=exp, checkpoint_every=64, **TINY)
    assert _files(exp) == before
    back = rl_trust.load(exp)
    assert back.config.run.seed == 1 and back.num_timesteps == 192
    obs = np.zeros((5, 4), np.float32)
    assert torch.equal(
        torch.cat([p.flatten() for p in back.policy.parameters()]),
        torch.cat([p.flatten() for p in first.policy.parameters()]),
    )
    assert np.array_equal(
        back.predict(obs, deterministic=True)[0], first.predict(obs, deterministic=True)[0]
    )


def test_load_of_an_earlier_checkpoint_then_learn_continues_as_resume_does(tmp_path):
    run = _tiny_run(tmp_path / "run", 256, checkpoint_every=64, keep_checkpoints=10)
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(run)] == [64, 128, 192, 256]
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    res = cli("resume", str(twin), "--checkpoint", "128", "--steps", "192", "--no-progress")
    assert res.returncode == 0, res.stderr

    model = rl_trust.load(run / "checkpoints" / "step_000000000128")
    assert model.num_timesteps == 128 and (run / "checkpoints" / "step_000000000256").is_dir()
    model.learn(64)
    kept = [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(run)]
    assert kept == [64, 128, 192]  # the old trajectory's 192 and 256 are not "newest" now
    aside = sorted(p.name for p in (run / "superseded").rglob("step_*"))
    assert aside == ["step_000000000192", "step_000000000256"]
    ours = checkpoint.load(run / "checkpoints" / "step_000000000192")
    theirs = checkpoint.load(twin / "checkpoints" / "step_000000000192")
    for key, value in theirs["policy"].items():  # bit-identical to `rl-trust resume`
        assert torch.equal(ours["policy"][key], value), key
    assert rl_trust.load(run).num_timesteps == 192


def test_a_model_saved_into_its_own_run_dir_before_learning_learns_there(tmp_path):
    model = rl_trust.PPO("CartPole-v1", run_dir=tmp_path / "run", **TINY)
    model.save(tmp_path / "run")
    model.learn(64)
    assert model.run_dir == tmp_path / "run"
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(model.run_dir)] == [0, 64]


def test_a_model_writes_nothing_before_its_first_learn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = rl_trust.PPO("CartPole-v1", **TINY)
    named = rl_trust.PPO("CartPole-v1", run_dir=tmp_path / "named", **TINY)
    assert list(tmp_path.iterdir()) == [] and model.run_dir is None
    model.learn(64)
    named.learn(64)
    assert model.run_dir.parent == Path("runs") and (model.run_dir / "config.yaml").is_file()
    assert (tmp_path / "named" / "checkpoints").is_dir()


class Upright(gym.Env):
    """CartPole, rewarded for staying upright: an env that only Python can make."""

    def __init__(self, render_mode=None):
        self.inner = gym.make("CartPole-v1", render_mode=render_mode)
        self.observation_space, self.action_space = (
            self.inner.observation_space,
            self.inner.action_space,
        )

    def reset(self, seed=None, options=None):
        return self.inner.reset(seed=seed)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.inner.step(action)
        return obs, reward - abs(obs[2]), terminated, truncated, info


def test_a_model_of_a_python_env_loads_without_it_and_predicts(tmp_path):
    model = rl_trust.PPO(Upright(), **TINY, run_dir=False).learn(128)
    run = model.save(tmp_path / "mine")
    obs = np.stack([gym.make("CartPole-v1").reset(seed=s)[0] for s in range(6)])
    back = rl_trust.PPO.load(run)  # no env: the spaces come from the checkpoint
    assert back.get_env() is None and back.observation_space == model.observation_space
    assert np.array_equal(
        back.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    with pytest.raises(ValueError, match=r"set_env\(env\)"):
        back.learn(64)
    assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == 128  # nothing written
    back.set_env(Upright())
    back.learn(64)
    assert back.num_timesteps == 192 and back.run_dir == run
    with pytest.raises(ValueError, match="observation space"):
        back.set_env(gym.make("Acrobot-v1"))


def test_eval_of_a_python_saved_run_says_how_to_give_its_env(tmp_path):
    (tmp_path / "upright_env.py").write_text(
        "import gymnasium as gym\n"
        "class Upright(gym.Wrapper):\n"
        "    def __init__(self, render_mode=None):\n"
        "        super().__init__(gym.make('CartPole-v1', render_mode=render_mode))\n"
    )
    run = rl_trust.PPO(Upright(), run_dir=False, **TINY).learn(64).save(tmp_path / "mine")
    res = cli("eval", str(run), "--episodes", "1", cwd=tmp_path)
    assert res.returncode == 2 and "--env module:Class" in res.stderr, res.stderr
    assert "--allow-import" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli(
        "eval",
        str(run),
        "--episodes",
        "1",
        "--env",
        "upright_env:Upright",
        cwd=tmp_path,
        env=pythonpath(tmp_path),
    )
    assert res.returncode == 2 and "--allow-import" in res.stderr
    res = cli(
        "eval",
        str(run),
        "--episodes",
        "1",
        "--env",
        "upright_env:Upright",
        "--allow-import",
        cwd=tmp_path,
        env=pythonpath(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    res = cli("eval", str(run), "--episodes", "1", "--env", "Acrobot-v1")
    assert res.returncode == 2 and "observation space" in res.stderr


def test_load_with_another_env_id_is_checked_against_the_saved_spaces(tmp_path):
    run = _tiny_run(tmp_path / "run")
    before = _files(run)
    with pytest.raises(ValueError, match="Acrobot-v1"):
        rl_trust.load(run, env="Acrobot-v1")
    with pytest.raises(ValueError, match="observation space"):
        rl_trust.load(run, env=gym.make("Acrobot-v1"))
    assert _files(run) == before
    model = rl_trust.load(run, env="CartPole-v0")  # the same spaces: taken, and recorded
    assert model.config.env.env_id == "CartPole-v0"


def test_load_imports_a_module_the_run_names_only_with_allow_import(tmp_path, monkeypatch):
    (tmp_path / "trustme_net.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(tmp_path / 'imported')!r}).write_text('yes')\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, n):\n"
        "        super().__init__()\n"
        "        self.latent_dim_pi = self.latent_dim_vf = 8\n"
        "        self.pi, self.vf = nn.Linear(n, 8), nn.Linear(n, 8)\n"
        "    def forward(self, obs):\n"
        "        return self.pi(obs), self.vf(obs)\n"
        "def factory(observation_space, action_space):\n"
        "    return Net(observation_space.shape[0])\n"
    )
    run = tmp_path / "run"
    res = cli(
        "train",
        "--run-dir",
        str(run),
        "--steps",
        "64",
        "--no-progress",
        "--set",
        "policy=trustme_net:factory",
        *[f"--set={k}={v}" for k, v in TINY.items()],
        env=pythonpath(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    (tmp_path / "imported").unlink()
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"trustme_net.*allow_import=True"):
        rl_trust.load(run)
    assert not (tmp_path / "imported").exists()  # its code never ran
    model = rl_trust.load(run, allow_import=True)
    assert (tmp_path / "imported").exists() and type(model.policy.extractor).__name__ == "Net"


@pytest.mark.parametrize("answer", [np.False_, 0, False, ""])
def test_any_falsy_callback_answer_but_none_stops(answer):
    model = rl_trust.PPO("CartPole-v1", run_dir=False, **TINY)
    calls = []

    def callback(metrics, trainer):
        calls.append(trainer.learner.step)
        return answer if len(calls) == 2 else np.float64(metrics["rollout/ep_rew_mean"]) < 1e9

    model.learn(640, callback=callback)
    assert calls == [64, 128] and model.num_timesteps == 128


def test_a_callback_returning_none_continues_and_a_list_runs_each():
    model = rl_trust.PPO("CartPole-v1", run_dir=False, **TINY)
    seen: list = []
    model.learn(
        192, callback=[lambda m, t: seen.append(t.learner.step), lambda m, t: t.learner.step < 128]
    )
    assert seen == [64, 128] and model.num_timesteps == 128


def test_an_sb3_callback_is_refused_before_anything_is_written(tmp_path):
    callbacks = pytest.importorskip("stable_baselines3.common.callbacks")
    model = rl_trust.PPO("CartPole-v1", run_dir=tmp_path / "run", **TINY)
    with pytest.raises(TypeError, match="stable-baselines3 BaseCallback"):
        model.learn(64, callback=callbacks.CheckpointCallback(64, str(tmp_path / "ck")))
    with pytest.raises(TypeError, match="callback=5"):
        model.learn(64, callback=5)
    assert not (tmp_path / "run").exists() and model.num_timesteps == 0


class TextEnv(gym.Env):
    observation_space, action_space = gym.spaces.Text(5), gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        return "hello", {}


class ShortObs(gym.Env):
    """Says 4 numbers, gives 3."""

    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


class ShortStep(ShortObs):
    """Right at reset, short after a step."""

    def reset(self, seed=None, options=None):
        return np.zeros(4, np.float32), {}


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and e.type.__module__ == "rl_trust.errors", (e.type, text)
    return text


def test_user_mistakes_are_one_line_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError) as e:
        rl_trust.PPO(TextEnv(), run_dir=run)
    assert "Text(" in _one_line(e) and "Box, Discrete, Dict or Tuple" in str(e.value)
    with pytest.raises(TypeError) as e:
        rl_trust.PPO(lambda: 5, run_dir=run)
    assert "int 5" in _one_line(e) and "gymnasium.Env" in str(e.value)
    with pytest.raises(ValueError) as e:
        rl_trust.PPO(ShortObs(), run_dir=run, **TINY)
    assert "shape (3,)" in _one_line(e) and "(4,)" in str(e.value)
    with pytest.raises(ValueError, match=r"step\(\)'s observation has shape \(3,\)"):
        rl_trust.PPO(lambda: ShortStep(), run_dir=run, **TINY)
    assert not run.exists()

    frozen = rl_trust.PPO("FrozenLake-v1", run_dir=False, **TINY)
    with pytest.raises(ValueError) as e:
        frozen.predict(99)
    assert "99" in _one_line(e) and "0..15" in str(e.value)
    with pytest.raises(ValueError, match="99"):
        frozen.predict(np.array([3, 99]))
    assert frozen.predict(np.array([3, 15]))[0].shape == (2,)
    blackjack = rl_trust.PPO("Blackjack-v1", run_dir=False, **TINY)
    with pytest.raises(ValueError) as e:
        blackjack.predict((99, 1, 0))
    assert "[0]" in _one_line(e) and "99" in str(e.value)
    assert blackjack.predict((20, 1, 0))[0].shape == ()


def test_an_env_whose_observation_differs_from_its_space_is_exit_2(tmp_path):
    (tmp_path / "short_env.py").write_text(
        "import gymnasium as gym, numpy as np\n"
        "class Short(gym.Env):\n"
        "    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)\n"
        "    action_space = gym.spaces.Discrete(2)\n"
        "    def reset(self, seed=None, options=None):\n"
        "        return np.zeros(3, np.float32), {}\n"
        "gym.register('ShortObs-v0', entry_point=Short)\n"
    )
    res = cli(
        "train",
        "--env",
        "short_env:ShortObs-v0",
        "--run-dir",
        str(tmp_path / "run"),
        "--steps",
        "64",
        env=pythonpath(tmp_path),
    )
    assert res.returncode == 2 and "shape (3,)" in res.stderr and "(4,)" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


def test_sb3_first_lines_build_the_same_model(capsys):
    ours = rl_trust.PPO("CartPole-v1", run_dir=False, seed=4, **TINY)
    for model in (
        rl_trust.PPO("MlpPolicy", "CartPole-v1", run_dir=False, seed=4, **TINY),
        rl_trust.PPO(policy="MlpPolicy", env="CartPole-v1", run_dir=False, seed=4, **TINY),
    ):
        assert model.config == ours.config
        pairs = zip(model.policy.parameters(), ours.policy.parameters(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    assert rl_trust.PPO("MultiInputPolicy", gym.make("CartPole-v1"), run_dir=False).n_envs == 1
    verbose = rl_trust.PPO("MlpPolicy", "CartPole-v1", verbose=1, run_dir=False, **TINY)
    assert verbose.config == rl_trust.PPO("CartPole-v1", run_dir=False, **TINY).config
    capsys.readouterr()
    verbose.learn(64)  # verbose=1: progress lines, as learn(progress_bar=True)
    assert "step 64/64 (100%)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tensorboard_log= is stable-baselines3's: the run folder"):
        rl_trust.PPO("MlpPolicy", "CartPole-v1", tensorboard_log="logs", run_dir=False)
    with pytest.raises(ValueError, match="MlpLstmPolicy.*MlpPolicy"):
        rl_trust.PPO("MlpLstmPolicy", "CartPole-v1", run_dir=False)
    with pytest.raises(TypeError, match="preset="):
        rl_trust.PPO("CartPole-v1", "ppo-clip", run_dir=False)


def test_sb3s_evaluate_policy_runs_our_model():
    evaluation = pytest.importorskip("stable_baselines3.common.evaluation")
    model = rl_trust.PPO("CartPole-v1", run_dir=False, **TINY)
    mean, std = evaluation.evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=2)
    assert mean > 0 and std >= 0
    action, state = model.predict(
        np.zeros(4, np.float32), state=None, episode_start=None, deterministic=True
    )
    assert isinstance(action, np.ndarray) and action.shape == () and state is None
    with pytest.raises(TypeError, match="deterministic=True"):
        model.predict(np.zeros(4, np.float32), True)


def test_the_attributes_an_sb3_user_reaches_for(tmp_path):
    a = rl_trust.PPO("Pendulum-v1", run_dir=False, seed=0, n_envs=2, **TINY)
    b = rl_trust.PPO("Pendulum-v1", run_dir=False, seed=1, n_envs=2, **TINY)
    assert a.observation_space == gym.make("Pendulum-v1").observation_space
    assert a.action_space == gym.make("Pendulum-v1").action_space
    assert a.n_envs == 2 and a.device == torch.device("cpu") and a.get_env().num_envs == 2
    obs = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    assert not np.array_equal(
        a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0]
    )
    b.set_parameters(a.get_parameters())
    assert np.array_equal(
        a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0]
    )
    c = rl_trust.PPO("Pendulum-v1", run_dir=False, seed=2, n_envs=2, **TINY)
    c.set_parameters(a.save(tmp_path / "a"))
    assert np.array_equal(
        a.predict(obs, deterministic=True)[0], c.predict(obs, deterministic=True)[0]
    )
    with pytest.raises(ValueError, match="do not fit"):
        rl_trust.PPO("CartPole-v1", run_dir=False).set_parameters(a.get_parameters())
    b.set_env(gym.make("Pendulum-v1"))
    assert b.learn(128).num_timesteps == 128


def test_learn_counts_as_sb3_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = rl_trust.PPO("CartPole-v1", **TINY)
    model.learn(128, log_interval=1)
    first = model.run_dir
    model.learn(64, reset_num_timesteps=False)
    assert model.num_timesteps == 192 and model.run_dir == first
    model.learn(128, reset_num_timesteps=True)  # counted from 0 again, into a new folder
    assert model.num_timesteps == 128 and model.run_dir != first
    assert checkpoint.step_of(checkpoint.list_checkpoints(first)[-1]) == 192
    assert checkpoint.step_of(checkpoint.list_checkpoints(model.run_dir)[-1]) == 128
    with pytest.raises(TypeError, match="log_interval"):
        model.learn(64, log_interval="often")
