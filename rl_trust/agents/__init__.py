"""One file per algorithm, each an Agent (agents/base.py); `build` picks it from the
config's algo. No module outside agents/ branches on the algorithm."""

from __future__ import annotations

import gymnasium as gym
import torch

from rl_trust.agents.base import Agent
from rl_trust.config import AgentConfig
from rl_trust.nets.build import make_policy


def agent_class(algo: str) -> type[Agent]:
    if algo == "ppo":
        from rl_trust.agents.ppo import PPO

        return PPO
    from rl_trust.agents.trpo import TRPO

    return TRPO


def build(cfg: AgentConfig, obs_space: gym.Space, action_space: gym.Space, seed: int) -> Agent:
    """An agent with a freshly initialized policy, its randomness drawn from `seed` only."""
    cls = agent_class(cfg.algo)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = make_policy(cfg, obs_space, action_space, share_encoder=cls.shares_encoder)
    return cls(cfg, policy, torch.Generator().manual_seed(seed + 1))
