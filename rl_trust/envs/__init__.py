"""Vector environments: any registered gymnasium id, plus the probe envs for tests."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from functools import partial

import gymnasium as gym
import numpy as np

from rl_trust.config import EnvConfig
from rl_trust.envs import masked, pool, probes
from rl_trust.envs.normalize import Normalizer, RunningMeanStd
from rl_trust.envs.sync import SyncVectorEnv
from rl_trust.envs.wrappers import apply_wrappers, wrapper_classes
from rl_trust.errors import UserError, one_line

__all__ = [
    "make_vec",
    "make_env",
    "Normalizer",
    "RunningMeanStd",
    "check_id",
    "check_import",
    "apply_wrappers",
]

probes.register()
masked.register()


def check_id(env_id: str) -> None:
    """A UserError naming the id, with the closest registered ids, if gymnasium lacks it."""
    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(f"env {env_id!r}: cannot import module {module!r} ({e})") from None
        except Exception as e:  # SyntaxError, or whatever its code raised
            raise UserError(
                f"env {env_id!r}: importing module {module!r} raised {one_line(e)}"
            ) from None
        env_id = name
    if env_id.startswith("ALE/") and env_id not in gym.registry:
        try:  # ale-py registers the ALE/ ids when imported
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            raise UserError(f"env {env_id!r} needs ale-py: pip install 'rl-trust[atari]'") from None
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown env id {env_id!r}: not registered with gymnasium{hint}")


def check_import(env_id: str, source: str, allow: bool) -> None:
    """A run folder's config is data: the module its `module:Env` id names is imported (its
    code run) only when already loaded or when the user allows it (--allow-import)."""
    module, sep, _ = env_id.rpartition(":")
    if sep and not allow and module not in sys.modules:
        raise UserError(
            f"{source} names env {env_id!r}: importing module {module!r} runs its code; "
            "pass --allow-import if you trust this run"
        )


def _make(env_id: str, cfg: EnvConfig, kwargs: dict) -> gym.Env:
    return apply_wrappers(gym.make(env_id, **kwargs), cfg.wrappers)


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env of the config, wrapped (for probing its spaces and for evaluation);
    `render_mode` replaces one that env_kwargs may give."""
    check_id(cfg.env_id)
    wrapper_classes(cfg.wrappers)  # (each wrapper importable, before the env is made)
    kwargs = dict(cfg.env_kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        return _make(cfg.env_id.rpartition(":")[2], cfg, kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise UserError(f"env {cfg.env_id!r} needs a package that is not installed: {e}") from None
    except TypeError as e:
        if render_mode is not None and "render_mode" in str(e):
            raise UserError(f"env {cfg.env_id!r} cannot render: {e}") from None
        raise UserError(f"env {cfg.env_id!r} rejected env_kwargs {kwargs}: {e}") from None


def make_vec(cfg: EnvConfig, seed: int) -> gym.vector.VectorEnv:
    """`n_envs` copies of the env, sync (ours, envs/sync.py), async (gymnasium's) or EnvPool's
    (envs/pool.py), resetting in the step that ends an episode (the final observation comes in
    info["final_obs"]), seeded seed, seed+1, ... (EnvPool: from seed)."""
    if cfg.overlap:  # two halves, seeded as the whole would be
        half = dataclasses.replace(cfg, n_envs=cfg.n_envs // 2, overlap=False)
        return Halves(make_vec(half, seed), make_vec(half, seed + half.n_envs))
    if cfg.vectorization == "envpool":
        return pool.make(cfg, seed)
    check_id(cfg.env_id)
    env_id = cfg.env_id.rpartition(":")[2]
    wrapper_classes(cfg.wrappers)
    try:
        if cfg.vectorization == "sync":
            env = SyncVectorEnv([lambda: _make(env_id, cfg, cfg.env_kwargs)] * cfg.n_envs)
        elif cfg.wrappers:  # each worker makes and wraps its env
            env = gym.vector.AsyncVectorEnv(
                [partial(_make, env_id, cfg, cfg.env_kwargs)] * cfg.n_envs,
                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
            )
        else:
            env = gym.make_vec(
                env_id,
                num_envs=cfg.n_envs,
                vectorization_mode="async",
                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                **cfg.env_kwargs,
            )
    except gym.error.DependencyNotInstalled as e:
        raise UserError(f"env {cfg.env_id!r} needs a package that is not installed: {e}") from None
    except TypeError as e:
        raise UserError(f"env {cfg.env_id!r} rejected env_kwargs {cfg.env_kwargs}: {e}") from None
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env


class Halves:
    """Two vector envs as one of both their envs (the first's, then the second's), for the
    rollout's double-buffered sampling (overlap=true): `halves` gives each with the slice of
    the envs it holds, to step one (step_async) while the policy acts on the other; `step`
    steps both at once. Each half is seeded where the whole would seed those envs."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        n = first.num_envs
        self.halves = ((slice(0, n), first), (slice(n, n + second.num_envs), second))
        self.num_envs = n + second.num_envs
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = gym.vector.utils.batch_space(
            first.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(first.single_action_space, self.num_envs)
        self.metadata, self.spec = first.metadata, getattr(first, "spec", None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seeds = (None, None) if seed is None else (seed, seed + self.first.num_envs)
        envs = (self.first, self.second)
        parts = [env.reset(seed=s, options=options)[0] for env, s in zip(envs, seeds, strict=True)]
        return np.concatenate(parts), {}

    def step(self, actions):
        n = self.first.num_envs
        self.first.step_async(actions[:n])
        self.second.step_async(actions[n:])
        return join(self.first.step_wait(), self.second.step_wait())

    def close(self) -> None:
        self.first.close()
        self.second.close()


def join(a: tuple, b: tuple) -> tuple:
    """Two halves' step results as one."""
    joined = [np.concatenate([x, y]) for x, y in zip(a[:4], b[:4], strict=True)]
    info = {}
    if "final_obs" in a[4] or "final_obs" in b[4]:
        none = [np.full(len(part[1]), None, object) for part in (a, b)]
        finals = [part[4].get("final_obs", empty) for part, empty in zip((a, b), none, strict=True)]
        info["final_obs"] = np.concatenate(finals)
    return (*joined, info)
