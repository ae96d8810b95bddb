"""One file per algorithm; `build` picks it from the config's algo."""

from __future__ import annotations

import gymnasium as gym
import torch

from rl_trust.config import AgentConfig
from rl_trust.policies import ActorCritic


def build(cfg: AgentConfig, obs_space: gym.Space, action_space: gym.Space, seed: int):
    """An agent with a freshly initialized policy, its randomness drawn from `seed` only."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = ActorCritic(
            obs_space, action_space, cfg.net_arch, cfg.activation, cfg.log_std_init, cfg.ortho_init
        )
    generator = torch.Generator().manual_seed(seed + 1)
    if cfg.algo == "ppo":
        from rl_trust.agents.ppo import PPO

        return PPO(cfg, policy, generator)
    from rl_trust.agents.trpo import TRPO

    return TRPO(cfg, policy, generator)
