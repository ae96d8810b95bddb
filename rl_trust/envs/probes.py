"""Small environments for tests, registered under the `rl_trust/` namespace.

- `rl_trust/Bandit-v0`: one step, two actions; action 1 pays 1, action 0 pays 0.
- `rl_trust/TargetBox-v0`: one step, a 1-D Box action; reward −(a − 0.5)².
- `rl_trust/TupleAction-v0`: a Tuple action space, which no policy here supports.
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


def register() -> None:
    for name, cls in (("Bandit", Bandit), ("TargetBox", TargetBox), ("TupleAction", TupleAction)):
        env_id = f"rl_trust/{name}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls)
