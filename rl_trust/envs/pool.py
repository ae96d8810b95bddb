"""EnvPool (`vectorization=envpool`, the optional extra `rl-trust[envpool]`): the envs step in
C++ threads, all of them at once, while the Python process waits once per step.

EnvPool resets an env in the step *after* the one that ends its episode (that step's action
is ignored). rl-trust's rollout expects what gymnasium's AutoresetMode.SAME_STEP gives: the
step that ends an episode returns the next episode's first observation, the last one in
info["final_obs"]. `EnvPoolVectorEnv` gives that: it steps the envs whose episode just ended
once more, alone (EnvPool steps a subset by env id), and swaps their observations.

Which EnvPool task and settings an env config maps to:
- `ALE/<Game>-v5` with gymnasium's AtariPreprocessing (and FrameStackObservation): EnvPool's
  `<Game>-v5` with the same frame skip, no-op starts, screen size, grey frames and stack, and
  what ALE v5 does by default: sticky actions 0.25, no reward clipping, no end of episode on
  a lost life, no FIRE on reset; the episode limit is EnvPool's 27,000 steps (108,000
  frames, ALE v5's). EnvPool resizes and max-pools the last two frames as AtariPreprocessing
  does, in C++; its frames are not bit for bit gymnasium's (docs/environments.md, "EnvPool").
- Any other id EnvPool knows (MuJoCo `Hopper-v5`, classic control): the same id, env_kwargs
  passed as EnvPool's task settings, and no wrappers.
"""

from __future__ import annotations

import numpy as np

from rl_trust.config import EnvConfig
from rl_trust.envs.wrappers import wrapper_entries
from rl_trust.errors import UserError

ATARI_WRAPPERS = {
    "gymnasium.wrappers.AtariPreprocessing": {
        # AtariPreprocessing's kwarg: (EnvPool's, AtariPreprocessing's default)
        "frame_skip": ("frame_skip", 4),
        "noop_max": ("noop_max", 30),
        "screen_size": ("img_height", 84),
        "grayscale_obs": ("gray_scale", True),
        "terminal_on_life_loss": ("episodic_life", False),
    },
    "gymnasium.wrappers.FrameStackObservation": {"stack_size": ("stack_num", None)},
}
ALE_V5 = {  # gymnasium's ALE/…-v5 as made with frameskip=1 and wrapped as above
    "repeat_action_probability": 0.25,
    "reward_clip": False,
    "episodic_life": False,
    "use_fire_reset": False,
    "stack_num": 1,
}


def task(cfg: EnvConfig) -> tuple[str, dict]:
    """The EnvPool task id and settings for an env config; a UserError for what EnvPool has
    no counterpart of."""
    env_id = cfg.env_id
    if ":" in env_id:
        raise UserError(f"vectorization=envpool: env {env_id!r} is a module's env, not EnvPool's")
    if not env_id.startswith("ALE/"):
        if cfg.wrappers:
            raise UserError(
                f"vectorization=envpool: wrappers are gymnasium's; EnvPool's {env_id} takes "
                "none (use vectorization=sync or async)"
            )
        return env_id, dict(cfg.env_kwargs)
    kwargs = dict(ALE_V5)
    for key, value in cfg.env_kwargs.items():
        if key == "frameskip" and value == 1:  # (AtariPreprocessing's frame skip is used)
            continue
        if key == "repeat_action_probability":
            kwargs[key] = float(value)
            continue
        raise UserError(
            f"vectorization=envpool: env_kwargs {key}={value!r} has no EnvPool counterpart "
            "here (only frameskip=1 and repeat_action_probability)"
        )
    for path, given in wrapper_entries(cfg.wrappers):
        if path not in ATARI_WRAPPERS:
            raise UserError(
                f"vectorization=envpool: wrapper {path} has no EnvPool counterpart (EnvPool's "
                f"Atari takes {', '.join(ATARI_WRAPPERS)})"
            )
        table = ATARI_WRAPPERS[path]
        for key, value in given.items():
            if key not in table:
                raise UserError(f"vectorization=envpool: {path}'s {key} has no counterpart")
            kwargs[table[key][0]] = value
        for key, (theirs, default) in table.items():
            if key not in given and default is not None:
                kwargs.setdefault(theirs, default)
    if "img_height" in kwargs:
        kwargs["img_width"] = kwargs["img_height"]
    return env_id.removeprefix("ALE/"), kwargs


def check(cfg: EnvConfig):
    """EnvPool itself, the task id and its settings, or a UserError (before a run folder is
    written)."""
    try:
        import envpool
    except ImportError:
        msg = "vectorization=envpool needs EnvPool: pip install 'rl-trust[envpool]'"
        raise UserError(msg) from None
    name, kwargs = task(cfg)
    if name not in envpool.list_all_envs():
        raise UserError(f"vectorization=envpool: EnvPool has no task {name!r} (env {cfg.env_id})")
    return envpool, name, kwargs


def make(cfg: EnvConfig, seed: int):
    """cfg.n_envs envs of the config's EnvPool task, seeded from `seed`."""
    envpool, name, kwargs = check(cfg)

    def make_pool(seed: int):
        try:
            return envpool.make_gymnasium(name, num_envs=cfg.n_envs, seed=seed, **kwargs)
        except (TypeError, ValueError, AssertionError) as e:
            msg = f"vectorization=envpool: EnvPool's {name} rejected {kwargs}: {e}"
            raise UserError(msg) from None

    return EnvPoolVectorEnv(make_pool, seed)


class EnvPoolVectorEnv:
    """An EnvPool pool behind the vector-env interface the rollout uses, with same-step
    resets (module docstring). EnvPool takes its seed when made: a reset with another seed
    (a resumed run's) makes the pool anew with it."""

    def __init__(self, make_pool, seed: int):
        import gymnasium as gym
        from gymnasium.vector.utils import batch_space

        self.make_pool, self.seed = make_pool, seed
        self.pool = pool = make_pool(seed)
        self.num_envs = pool.config["num_envs"]
        self.single_observation_space = pool.observation_space
        self.single_action_space = pool.action_space
        self.observation_space = batch_space(pool.observation_space, self.num_envs)
        self.action_space = batch_space(pool.action_space, self.num_envs)
        self.metadata, self.spec = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, None
        self._all = np.arange(self.num_envs)
        self._idle = np.zeros((self.num_envs, *pool.action_space.shape), pool.action_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None and seed != self.seed:
            self.pool.close()
            self.pool, self.seed = self.make_pool(seed), seed
        obs, info = self.pool.reset()
        return obs[np.argsort(info["env_id"])], {}  # (in env order)

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions) -> None:
        self.pool.send(np.asarray(actions), self._all)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.pool.recv()
        order = info["env_id"]  # (EnvPool returns the envs in the order they finished)
        if not np.array_equal(order, self._all):
            back = np.argsort(order)
            obs, reward, terminated, truncated = (
                x[back] for x in (obs, reward, terminated, truncated)
            )
        ended = np.flatnonzero(terminated | truncated)
        out = {}
        if len(ended):
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in ended:
                final_obs[i] = obs[i].copy()
            first, _, _, _, info = self.pool.step(self._idle[: len(ended)], ended)  # resets
            obs = obs.copy()
            obs[info["env_id"]] = first
            out["final_obs"] = final_obs
        return obs, reward.astype(np.float64), terminated, truncated, out

    def close(self) -> None:
        self.pool.close()
