"""Envs with invalid actions, registered under the `rl_trust/` namespace (envs/masks.py reads
their masks; tests/test_masking.py, benchmarks/masking).

- `rl_trust/InvalidCount-v0`: every step a new random mask over the actions (at least one
  allowed per component), given by `action_masks()`; the observation is that mask (as
  floats), an allowed action pays 1, a forbidden one 0. It counts the forbidden actions it
  is sent in `COUNTS` (this process's envs together); with strict=True it raises on one,
  which ends a run in another process. `space`: "discrete" (Discrete(5)), "multidiscrete"
  (MultiDiscrete([3, 4])) or "multibinary" (MultiBinary(4): a mask of one boolean per bit,
  whether it may be set; bit_pairs=True: two per bit, may be 0 and may be 1).
- `rl_trust/InvalidCountInfo-v0`: the same, its mask in info["action_mask"] (gymnasium's
  convention) instead of a method. For the checks of envs/masks.py, `bad` gives a broken
  mask from the `bad_at`-th step of this env on: "shape" (one boolean too many), "dtype"
  (floats), "values" (a 2 among the 0s and 1s) or "none" (nothing allowed).
- `rl_trust/MaskedCorridor-v0`: a corridor of `length` cells and `n_actions` actions, of
  which `legal` are allowed in each cell (a fixed draw per cell, the same for every seed):
  one moves forward (+1; the last cell ends the episode: return `length`), the others are
  dead ends, which end it, as does a forbidden action. The observation is the cell,
  one-hot. With masks a random policy finds the way on one time in `legal`; without, one in
  `n_actions`: it needs masks to be learned in a small budget.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

COUNTS = {"steps": 0, "invalid": 0}  # InvalidCount's, in this process


def reset_counts() -> None:
    COUNTS.update(steps=0, invalid=0)


class InvalidCountInfo(gym.Env):
    SPACES = {
        "discrete": gym.spaces.Discrete(5),
        "multidiscrete": gym.spaces.MultiDiscrete([3, 4]),
        "multibinary": gym.spaces.MultiBinary(4),
    }

    def __init__(
        self,
        space: str = "discrete",
        strict: bool = False,
        bit_pairs: bool = False,
        bad: str | None = None,
        bad_at: int = 0,
    ):
        self.action_space = self.SPACES[space]
        self.kind, self.strict, self.bit_pairs = space, strict, bit_pairs
        self.bad, self.bad_at, self.steps = bad, bad_at, 0
        size = {"discrete": 5, "multidiscrete": 7, "multibinary": 4}[space]
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), np.float32)
        self.mask = np.ones(size, bool)
        self.t = 0

    def _draw(self) -> None:
        """A new mask, every component (or nothing at all: MultiBinary) allowing something."""
        rng = self.np_random
        self.mask = rng.random(self.observation_space.shape[0]) < 0.4
        if self.kind == "discrete":
            self.mask[rng.integers(5)] = True
        elif self.kind == "multidiscrete":
            self.mask[rng.integers(3)] = True
            self.mask[3 + rng.integers(4)] = True

    def _valid(self, action) -> bool:
        a = np.asarray(action).reshape(-1).astype(np.int64)
        if self.kind == "discrete":
            return bool(self.mask[a[0]])
        if self.kind == "multidiscrete":
            return bool(self.mask[a[0]] and self.mask[3 + a[1]])
        return bool(np.all(self.mask | (a == 0)))  # a bit set only where it may be

    def action_mask(self) -> np.ndarray:
        if self.kind == "multibinary" and self.bit_pairs:  # (may be 0, may be 1) per bit
            return np.stack([np.ones_like(self.mask), self.mask], 1).reshape(-1).astype(np.int8)
        mask = self.mask.astype(np.int8)
        if self.bad is None or self.steps < self.bad_at:
            return mask
        if self.bad == "shape":
            return np.append(mask, 1)
        if self.bad == "dtype":
            return mask.astype(np.float32)
        if self.bad == "values":
            return np.where(mask > 0, 2, 0).astype(np.int8)
        return np.zeros_like(mask)  # "none"

    def _info(self) -> dict:
        return {"action_mask": self.action_mask()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self.mask.astype(np.float32), self._info()

    def step(self, action):
        valid = self._valid(action)
        self.steps += 1
        COUNTS["steps"] += 1
        if not valid:
            COUNTS["invalid"] += 1
            if self.strict:
                raise RuntimeError(f"invalid action {action} under mask {self.action_mask()}")
        self.t += 1
        self._draw()
        return self.mask.astype(np.float32), float(valid), False, self.t >= 20, self._info()


class InvalidCount(InvalidCountInfo):
    def action_masks(self) -> np.ndarray:
        return self.action_mask().astype(bool)

    def _info(self) -> dict:
        return {}


class MaskedCorridor(gym.Env):
    def __init__(self, n_actions: int = 256, length: int = 10, legal: int = 4, layout: int = 0):
        if not 1 <= legal <= n_actions:
            raise ValueError(f"legal={legal} must be in 1..n_actions={n_actions}")
        self.length = length
        self.action_space = gym.spaces.Discrete(n_actions)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (length,), np.float32)
        draw = np.random.default_rng(layout)  # the corridor, the same for every seed
        self.allowed = np.zeros((length, n_actions), bool)
        self.forward = np.zeros(length, np.int64)
        for cell in range(length):
            actions = draw.choice(n_actions, legal, replace=False)
            self.allowed[cell, actions] = True
            self.forward[cell] = actions[0]
        self.cell = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, np.float32)
        obs[self.cell] = 1.0
        return obs

    def action_masks(self) -> np.ndarray:
        return self.allowed[self.cell].copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell = 0
        return self._obs(), {}

    def step(self, action):
        a = int(action)
        if not self.allowed[self.cell, a]:
            return self._obs(), 0.0, True, False, {}
        if a != self.forward[self.cell]:  # allowed, but a dead end
            return self._obs(), 0.0, True, False, {}
        self.cell += 1
        done = self.cell == self.length
        if done:
            self.cell -= 1  # (the observation stays in the corridor)
        return self._obs(), 1.0, done, False, {}


def register() -> None:
    for cls in (InvalidCount, InvalidCountInfo, MaskedCorridor):
        env_id = f"rl_trust/{cls.__name__}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls)
