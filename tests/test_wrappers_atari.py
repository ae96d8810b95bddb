"""`wrappers:` in an env preset or --set, the Atari and CarRacing presets, the linear clip
range schedule, and a short Atari run through the CLI and through the SB3 adapter (when
ale-py, the `atari` extra, is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from conftest import cli

from rl_trust import agents, config
from rl_trust.envs import make_env
from rl_trust.nets.observations import ImageObs, layout_for

TINY = ["--steps", "256", "--set", "n_steps=64", "--set", "batch_size=32", "--no-progress"]


@pytest.mark.parametrize(
    "wrappers,message",
    [
        ("[1]", "wrappers must be a list of"),
        ("[{a.B: {x: 1}, c.D: null}]", "wrappers must be a list of"),
        ("[no_such_module.Wrapper]", "wrappers: cannot import 'no_such_module'"),
        ("[gymnasium.wrappers.NoSuchWrapper]", "NoSuchWrapper is not a gymnasium.Wrapper class"),
        ("[rl_trust.config.EnvConfig]", "EnvConfig is not a gymnasium.Wrapper class"),
        ("[{gymnasium.wrappers.TimeLimit: {bogus: 1}}]", "TimeLimit(**{'bogus': 1}) failed"),
        # a required kwarg missing (stack_size)
        ("[gymnasium.wrappers.FrameStackObservation]", "FrameStackObservation(**{}) failed"),
    ],
)
def test_bad_wrappers_are_one_line(tmp_path, wrappers, message):
    res = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--set",
        f"wrappers={wrappers}",
        *TINY,
        "--runs-root",
        str(tmp_path),
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_wrappers_wrap_every_env_in_order(tmp_path):
    """A TimeLimit of 20 steps around CartPole: no episode is longer (sync and async)."""
    for vectorization in ("sync", "async"):
        run = tmp_path / vectorization
        res = cli(
            "train",
            "--env",
            "CartPole-v1",
            *TINY,
            "--set",
            "n_envs=2",
            "--set",
            f"vectorization={vectorization}",
            "--set",
            "wrappers=[{gymnasium.wrappers.TimeLimit: {max_episode_steps: 20}}]",
            "--run-dir",
            str(run),
        )
        assert res.returncode == 0, res.stderr
        summary = json.loads((run / "summary.json").read_text())
        assert summary["final"]["rollout/ep_len_mean"] <= 20
        assert "max_episode_steps: 20" in (run / "config.yaml").read_text()
        res = cli("eval", str(run), "--episodes", "3")
        assert res.returncode == 0, res.stderr
        assert max(json.loads((run / "eval.json").read_text())["lengths"]) <= 20


def test_atari_and_carracing_presets():
    """ALE/ ids find their preset as ALE_<game>.yaml; rl-zoo's PPO Atari hyperparameters;
    CarRacing's frames are an image for the Nature CNN."""
    for game in ("Pong", "Breakout"):
        cfg = config.load("ppo-clip", f"ALE/{game}-v5", {}, None, 0)
        a, e = cfg.agent, cfg.env
        assert (e.n_envs, a.n_steps, a.n_epochs, a.batch_size) == (8, 128, 4, 256)
        assert (a.learning_rate, a.lr_schedule, a.clip_range, a.clip_range_schedule) == (
            2.5e-4,
            "linear",
            0.1,
            "linear",
        )
        assert (a.vf_coef, a.ent_coef, a.net_arch) == (0.5, 0.01, ())
        assert e.env_kwargs == {"frameskip": 1}
        assert [next(iter(w)) for w in e.wrappers] == [
            "gymnasium.wrappers.AtariPreprocessing",
            "gymnasium.wrappers.FrameStackObservation",
        ]
        assert config.load("trpo", f"ALE/{game}-v5", {}, None, 0).agent.n_steps == 128
    cfg = config.load("ppo-clip", "CarRacing-v3", {}, None, 0)
    env = make_env(cfg.env)
    assert env.observation_space.shape == (2, 96, 96)
    assert isinstance(layout_for(env.observation_space), ImageObs)
    env.close()


def test_linear_clip_range_schedule():
    """ε·(progress left), as SB3's linear clip_range schedule; the adapter passes it."""
    from rl_trust.benchmark.sb3 import sb3_kwargs
    from rl_trust.rollout import Batch

    values = {"clip_range_schedule": "linear", "n_steps": 64, "batch_size": 32}
    cfg = config.load("ppo-clip", "CartPole-v1", values, None, 0)
    space = gym.spaces.Box(-1, 1, (4,))
    agent = agents.build(cfg.agent, space, gym.spaces.Discrete(2), 0)
    n = 64
    batch = Batch(
        torch.randn(n, 4),
        torch.randint(0, 2, (n, 1)).float(),
        torch.full((n,), -0.7),
        torch.zeros(n),
        torch.zeros(n, 2),
        torch.randn(n),
        torch.randn(n),
    )
    assert agent.update(batch, progress_remaining=0.25)["train/clip_range"] == pytest.approx(0.05)
    assert agent.update(batch, progress_remaining=1.0)["train/clip_range"] == pytest.approx(0.2)
    schedule = sb3_kwargs(cfg.to_dict())[1]["clip_range"]
    assert schedule(0.25) == pytest.approx(0.05)
    assert (
        sb3_kwargs(config.load("ppo-clip", "CartPole-v1", {}, None, 0).to_dict())[1]["clip_range"]
        == 0.2
    )


def test_breakout_trains_evaluates_and_resumes(tmp_path):
    """A few thousand steps of ALE/Breakout-v5 with its preset, through the CLI."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    run = tmp_path / "breakout"
    res = cli(
        "train",
        "--agent",
        "ppo-clip",
        "--env",
        "ALE/Breakout-v5",
        "--steps",
        "2048",
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2048 and summary["updates"] == 2
    assert summary["final"]["train/clip_range"] == pytest.approx(0.1 * (1 - 1024 / 2048))
    res = cli("eval", str(run), "--episodes", "1", "--max-steps", "100", "--video")
    assert res.returncode == 0, res.stderr
    videos = json.loads((run / "eval.json").read_text())["videos"]
    assert len(videos) == 1 and Path(videos[0]).stat().st_size > 0


def test_sb3_adapter_gives_cnn_policy_and_the_same_wrappers():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from rl_trust.benchmark import sb3

    cfg = config.load("ppo-clip", "ALE/Breakout-v5", {"steps": 1024, "n_envs": 2}, None, 0)
    name, kwargs, env = sb3.sb3_kwargs(cfg.to_dict())
    assert (name, env["policy"]) == ("PPO", "CnnPolicy")
    assert kwargs["policy_kwargs"]["share_features_extractor"] is True
    assert env["wrappers"] == cfg.env.wrappers
    result = sb3.train(cfg.to_dict())
    assert result["steps"] >= 1024
    dict_cfg = config.load("trpo", "rl_trust/DictCue-v0", {}, None, 0).to_dict()
    _, kwargs, env = sb3.sb3_kwargs(dict_cfg)
    assert env["policy"] == "MultiInputPolicy"
    assert kwargs["policy_kwargs"]["share_features_extractor"] is False


def test_sb3_steps_atari_in_subprocess_workers():
    """vectorization=async gives SB3 a SubprocVecEnv, whose workers start afresh: each
    registers the ALE/ ids before making its env (it failed with NamespaceNotFound)."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from rl_trust.benchmark import sb3

    overrides = {"steps": 256, "n_envs": 2, "n_steps": 128, "vectorization": "async"}
    cfg = config.load("ppo-clip", "ALE/Breakout-v5", overrides, None, 0).to_dict()
    assert sb3.sb3_kwargs(cfg)[2]["vec_env"] == "subproc"
    assert sb3.train(cfg)["steps"] == 256
