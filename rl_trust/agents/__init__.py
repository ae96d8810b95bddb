"""One file per algorithm; `build` picks it from the config's algo."""

from __future__ import annotations

import gymnasium as gym
import torch

from rl_trust.config import AgentConfig
from rl_trust.networks import make_policy


def build(cfg: AgentConfig, obs_space: gym.Space, action_space: gym.Space, seed: int):
    """An agent with a freshly initialized policy, its randomness drawn from `seed` only."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = make_policy(cfg, obs_space, action_space)
    generator = torch.Generator().manual_seed(seed + 1)
    if cfg.algo == "ppo":
        from rl_trust.agents.ppo import PPO

        return PPO(cfg, policy, generator)
    from rl_trust.agents.trpo import TRPO

    return TRPO(cfg, policy, generator)
