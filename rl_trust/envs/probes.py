"""Small environments for tests, registered under the `rl_trust/` namespace.

- `rl_trust/Bandit-v0`: one step, two actions; action 1 pays 1, action 0 pays 0.
- `rl_trust/TargetBox-v0`: one step, a 1-D Box action; reward −(a − 0.5)².
- `rl_trust/TupleAction-v0`: a Tuple action space, which no policy here supports.
- `rl_trust/Endless-v0`: an episode that never ends and no time limit, as CliffWalking's
  can be: for the cap on evaluation episodes.
- `rl_trust/NaNAfter-v0`: episodes of 10 steps paying 1, until its observations turn NaN
  after `nan_after` steps (600 by default): a broken simulator, for the divergence guard.
- `rl_trust/PixelColor-v0`: one step; a black 36×36 RGB image (uint8, channels last) but
  for one pixel, red or green at random; action 1 pays 1 when it is green, action 0 when
  it is red. Only a network that sees pixels (the Nature CNN) can beat 0.5.
- `rl_trust/DictCue-v0`: one step; a Dict of a cue (Discrete(2)) and noise (a Box of 4);
  the action equal to the cue pays 1. Only the cue key matters.
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


class PixelColor(gym.Env):
    SIDE, PIXEL = 36, (17, 21)  # (row, column) of the pixel that matters
    observation_space = gym.spaces.Box(0, 255, (SIDE, SIDE, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None):
        self.render_mode, self.green = render_mode, 0

    def _obs(self) -> np.ndarray:
        image = np.zeros(self.observation_space.shape, np.uint8)
        image[self.PIXEL][1 if self.green else 0] = 255
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.green = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.green)
        self.green = int(self.np_random.integers(2))
        return self._obs(), reward, True, False, {}

    def render(self):
        return np.kron(self._obs(), np.ones((2, 2, 1), np.uint8))  # 72×72, for a video


class DictCue(gym.Env):
    observation_space = gym.spaces.Dict(
        {"cue": gym.spaces.Discrete(2), "noise": gym.spaces.Box(-1.0, 1.0, (4,), np.float32)}
    )
    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None):
        self.render_mode, self.cue = render_mode, 0

    def _obs(self) -> dict:
        noise = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return {"cue": self.cue, "noise": noise}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.cue = int(self.np_random.integers(2))
        return self._obs(), reward, True, False, {}

    def render(self):
        return np.full((64, 64, 3), 255 * self.cue, np.uint8)


def register() -> None:
    probes = [Bandit, TargetBox, TupleAction, Endless, NaNAfter, PixelColor, DictCue]
    for name, cls in ((c.__name__, c) for c in probes):
        env_id = f"rl_trust/{name}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls)
