"""vectorization=envpool: EnvPool's C++ envs behind the rollout's vector-env interface, with
the episode's last observation in info["final_obs"] and the next episode's first returned in
the same step, as gymnasium's SAME_STEP autoreset; and the env config's mapping to EnvPool's
task settings, with one line for what has no counterpart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli, train_and_resume

from rl_trust import config
from rl_trust.envs import pool
from rl_trust.errors import UserError


def test_the_breakout_preset_maps_to_envpool_with_ale_v5_defaults():
    cfg = config.load("ppo-clip", "ALE/Breakout-v5", {"vectorization": "envpool"}, None, 0).env
    name, kwargs = pool.task(cfg)
    assert name == "Breakout-v5"
    assert kwargs == {
        "repeat_action_probability": 0.25,  # ALE v5's sticky actions
        "reward_clip": False,
        "episodic_life": False,
        "use_fire_reset": False,
        "frame_skip": 4,
        "noop_max": 30,
        "img_height": 84,
        "img_width": 84,
        "gray_scale": True,
        "stack_num": 4,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"env_kwargs": {"frameskip": 1, "full_action_space": True}},
            "env_kwargs full_action_space=True has no EnvPool counterpart",
        ),
        (
            {
                "wrappers": [
                    "gymnasium.wrappers.AtariPreprocessing",
                    "gymnasium.wrappers.ClipReward",
                ]
            },
            "wrapper gymnasium.wrappers.ClipReward has no EnvPool counterpart",
        ),
        (
            {"wrappers": [{"gymnasium.wrappers.AtariPreprocessing": {"scale_obs": True}}]},
            "AtariPreprocessing's scale_obs has no counterpart",
        ),
    ],
)
def test_what_envpool_cannot_do_is_one_error(overrides, message):
    cfg = config.load("ppo-clip", "ALE/Breakout-v5", overrides, None, 0).env
    with pytest.raises(UserError, match=message):
        pool.task(config_with_envpool(cfg))


def config_with_envpool(env_cfg):
    import dataclasses

    return dataclasses.replace(env_cfg, vectorization="envpool")


def test_a_gymnasium_wrapper_on_a_non_atari_env_exits_2_before_writing(tmp_path):
    res = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--steps",
        "256",
        "--set",
        "n_steps=128",
        "--set",
        "vectorization=envpool",
        "--set",
        "wrappers=[{gymnasium.wrappers.TimeLimit: {max_episode_steps: 20}}]",
        "--runs-root",
        str(tmp_path),
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrappers are gymnasium's" in lines[0], res.stderr
    assert not any(tmp_path.iterdir())


def test_episodes_reset_in_the_step_that_ends_them():
    """CartPole in EnvPool, random actions: where an episode ends, final_obs holds its last
    state (out of bounds, or the 500th step) and the returned observation is a fresh one
    (every component within ±0.05, as CartPole's reset draws it)."""
    pytest.importorskip("envpool")
    cfg = config.load("ppo", "CartPole-v1", {"vectorization": "envpool", "n_envs": 3}).env
    env = pool.make(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 4) and np.all(np.abs(obs) <= 0.05)
    rng, ends = np.random.default_rng(0), 0
    for _ in range(300):
        obs, reward, term, trunc, info = env.step(rng.integers(0, 2, 3))
        assert reward.shape == (3,) and np.all(reward == 1.0)
        done = np.flatnonzero(term | trunc)
        assert ("final_obs" in info) == bool(len(done))
        for i in done:
            last = info["final_obs"][i]
            assert abs(last[0]) > 2.4 or abs(last[2]) > 0.2095 or trunc[i]
            assert np.all(np.abs(obs[i]) <= 0.05)  # the next episode's first observation
            ends += 1
        for i in np.flatnonzero(~(term | trunc)):
            assert "final_obs" not in info or info["final_obs"][i] is None
    assert ends >= 10
    env.close()


def test_cli_trains_resumes_and_evaluates_with_envpool(tmp_path):
    pytest.importorskip("envpool")
    run = tmp_path / "run"
    summary = train_and_resume(run, "n_envs=4", "vectorization=envpool")
    assert summary["steps"] == 2048 and summary["episodes"] > 0
    res = cli("eval", str(run), "--episodes", "2")  # (evaluates in gymnasium's CartPole)
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "eval.json").read_text())["episodes"] == 2
