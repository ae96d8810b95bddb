"""Small environments for tests, registered under the `rl_trust/` namespace.

- `rl_trust/Bandit-v0`: one step, two actions; action 1 pays 1, action 0 pays 0.
- `rl_trust/TargetBox-v0`: one step, a 1-D Box action; reward −(a − 0.5)².
- `rl_trust/TupleAction-v0`: a Tuple action space, which no policy here supports.
- `rl_trust/Endless-v0`: an episode that never ends and no time limit, as CliffWalking's
  can be: for the cap on evaluation episodes.
- `rl_trust/NaNAfter-v0`: episodes of 10 steps paying 1, until its observations turn NaN
  after `nan_after` steps (600 by default): a broken simulator, for the divergence guard.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Bandit(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), float(action == 1), True, False, {}


class TargetBox(Bandit):
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def step(self, action):
        return np.zeros(1, np.float32), -float((action[0] - 0.5) ** 2), True, False, {}


class TupleAction(Bandit):
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))


class Endless(Bandit):
    def step(self, action):
        return np.zeros(1, np.float32), float(action == 1), False, False, {}


class NaNAfter(Bandit):
    def __init__(self, nan_after: int = 600):
        self.nan_after, self.steps, self.t = nan_after, 0, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed)

    def step(self, action):
        self.steps, self.t = self.steps + 1, self.t + 1
        obs = np.full(1, np.nan if self.steps > self.nan_after else self.t / 10, np.float32)
        return obs, 1.0, self.t >= 10, False, {}


def register() -> None:
    probes = [Bandit, TargetBox, TupleAction, Endless, NaNAfter]
    for name, cls in ((c.__name__, c) for c in probes):
        env_id = f"rl_trust/{name}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls)
