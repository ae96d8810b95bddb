"""overlap=true: double-buffered sampling. The envs step in two halves, one half while the
policy acts on the other; the actions are drawn in the same order from the same policy, so
the rollout collects the very batch the plain rollout collects from the same envs and
seeds, episodes and normalized rewards included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import train_and_resume

from rl_trust import agents, config
from rl_trust.envs import Normalizer, make_vec
from rl_trust.errors import UserError
from rl_trust.rollout import Collector


def rollouts(overrides: dict, n: int = 3):
    """n batches of a fresh agent's rollout, and the episode statistics after them."""
    cfg = config.load("ppo-clip", overrides.pop("env"), overrides)
    env = make_vec(cfg.env, cfg.run.seed)
    a, e = cfg.agent, cfg.env
    agent = agents.build(a, env.single_observation_space, env.single_action_space, 0)
    normalizer = Normalizer(
        agent.policy.obs_layout.norm_shape,
        e.n_envs,
        obs=e.normalize_obs,
        reward=e.normalize_reward,
        gamma=a.gamma,
        clip_obs=e.clip_obs,
        clip_reward=e.clip_reward,
    )
    collector = Collector(env, agent.policy, normalizer, a.n_steps, a.gamma, a.gae_lambda, 5)
    batches = [collector.collect() for _ in range(n)]
    env.close()
    return batches, (list(collector.episode_returns), collector.episodes)


def assert_same(plain, overlapped, exact: bool = True) -> None:
    """Bit for bit; or, for a Gaussian policy, to float32 rounding: the MLP sampler's matrix
    products on half the rows may round the last bit otherwise (BLAS picks its kernel by
    size), and a Box action carries that into the env."""
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-5, "atol": 1e-4}
    (batches, episodes), (others, other_episodes) = plain, overlapped
    for batch, other in zip(batches, others, strict=True):
        for field in vars(batch):
            torch.testing.assert_close(
                getattr(other, field), getattr(batch, field), **tol, msg=field
            )
    assert other_episodes[1] == episodes[1] > 0
    np.testing.assert_allclose(other_episodes[0], episodes[0], **tol)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_overlapped_async_rollouts_are_the_plain_ones(env_id):
    """CartPole's episodes end within the rollouts and Pendulum's are cut by its time limit
    (the bootstrap from the final observation); rewards normalized over all envs."""
    common = {
        "env": env_id,
        "vectorization": "async",
        "n_envs": 4,
        "n_steps": 128,
        "normalize_reward": True,
    }
    if env_id == "Pendulum-v1":
        common["n_steps"] = 256  # (200-step episodes)
    exact = env_id == "CartPole-v1"
    assert_same(rollouts(dict(common)), rollouts({**common, "overlap": True}), exact)


def test_overlapped_envpool_rollouts_are_the_plain_ones():
    pytest.importorskip("envpool")
    common = {"env": "CartPole-v1", "vectorization": "envpool", "n_envs": 4, "n_steps": 128}
    assert_same(rollouts(dict(common)), rollouts({**common, "overlap": True}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"overlap": True, "n_envs": 4}, "needs vectorization=async or envpool"),
        ({"overlap": True, "n_envs": 3, "vectorization": "async"}, "an even n_envs"),
        (
            {"overlap": True, "n_envs": 2, "vectorization": "async", "normalize_obs": True},
            "overlap=true needs normalize_obs=false",
        ),
    ],
)
def test_overlap_without_what_it_needs_is_one_error(overrides, message):
    with pytest.raises(UserError, match=message):
        config.load("ppo", "CartPole-v1", overrides)


def test_cli_trains_and_resumes_with_overlap(tmp_path):
    settings = ("n_envs=4", "vectorization=async", "overlap=true")
    summary = train_and_resume(tmp_path / "run", *settings)
    assert summary["steps"] == 2048 and summary["episodes"] > 0
    assert np.isfinite(summary["final"]["rollout/ep_rew_mean"])
