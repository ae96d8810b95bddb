"""Whole episodes of a policy on one env, its normalization statistics frozen: the periodic
evaluation during training, `rl-trust eval`, and the actions `predict` gives."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import numpy as np
import torch

from rl_trust.envs import Normalizer, masks
from rl_trust.nets.actor_critic import ActorCritic


@torch.no_grad()
def act(
    policy: ActorCritic,
    normalizer: Normalizer,
    obs: np.ndarray,
    deterministic: bool,
    generator: torch.Generator,
    masks: np.ndarray | None = None,
) -> np.ndarray:
    """The policy's actions (its mode, or samples) for a batch of raw observations, as the
    env takes them: observations normalized with the statistics frozen, Box actions clipped;
    with `masks` (checked booleans, a row per observation), from the masked distribution."""
    fam = policy.family
    x = policy.preprocess_numpy(obs, partial(normalizer.obs, update=False))
    params = policy.dist_params(policy.obs_layout.tensor(x)).cpu()
    if masks is not None:
        params = fam.masked(params, torch.from_numpy(masks))
    action = fam.mode(params) if deterministic else fam.sample(params, generator)
    return fam.to_env(action.numpy())


@torch.no_grad()
def run_episodes(
    env: gym.Env,
    policy: ActorCritic,
    normalizer: Normalizer,
    episodes: int,
    deterministic: bool,
    seed: int,
    generator: torch.Generator,
    max_steps: int,
    stop: Callable[[], bool] = lambda: False,
    action_masking: str = "off",
    env_name: str = "the env",
) -> tuple[list[float], list[int]]:
    """Whole episodes of `policy` (its mode, or samples), observations normalized with
    the statistics frozen; episode k starts from seed + k. An episode ends at the env's
    time limit or, for an env without one, after `max_steps` steps (with a warning). Returns
    returns and lengths, of fewer episodes when `stop()` turns true (checked every step).
    With action_masking (auto / on), actions come from the distribution masked by the env's
    invalid-action masks (envs/masks.py), as in training."""
    training = normalizer.training
    limit = getattr(env.spec, "max_episode_steps", None) or max_steps
    normalizer.training = False
    returns, lengths, capped, taken = [], [], 0, 0
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            if episode == 0:
                source = masks.for_env(env, info, action_masking, policy.family, env_name)
            done, total, length = False, 0.0, 0
            while not done:
                if stop():
                    return returns, lengths
                batch = policy.obs_layout.one(obs)
                mask = None
                if source is not None:
                    source.step = taken
                    mask = source.read(info)
                action = act(policy, normalizer, batch, deterministic, generator, mask)
                obs, reward, terminated, truncated, info = env.step(action[0])
                taken += 1
                total, length = total + float(reward), length + 1
                done = terminated or truncated or length >= limit
            capped += not (terminated or truncated)
            returns.append(total)
            lengths.append(length)
    finally:
        normalizer.training = training
    if capped:
        print(
            f"rl-trust: warning: {capped} of {episodes} evaluation episodes were cut at "
            f"{limit} steps (the env has no time limit; set eval_max_steps)",
            file=sys.stderr,
        )
    return returns, lengths
