"""Vector environments: any registered gymnasium id, plus the probe envs for tests."""

from __future__ import annotations

import difflib
import importlib
import sys

import gymnasium as gym

from rl_trust.config import EnvConfig
from rl_trust.envs import probes
from rl_trust.envs.normalize import Normalizer, RunningMeanStd
from rl_trust.envs.sync import SyncVectorEnv
from rl_trust.errors import UserError

__all__ = ["make_vec", "make_env", "Normalizer", "RunningMeanStd", "check_id", "check_import"]

probes.register()


def check_id(env_id: str) -> None:
    """A UserError naming the id, with the closest registered ids, if gymnasium lacks it."""
    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(f"env {env_id!r}: cannot import module {module!r} ({e})") from None
        except Exception as e:  # SyntaxError, or whatever its code raised
            first = (str(e).strip().splitlines() or [""])[0]
            raise UserError(
                f"env {env_id!r}: importing module {module!r} raised "
                f"{e.__class__.__name__}: {first}"
            ) from None
        env_id = name
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


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env of the config (for probing its spaces and for evaluation); `render_mode`
    replaces one that env_kwargs may give."""
    check_id(cfg.env_id)
    kwargs = dict(cfg.env_kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        return gym.make(cfg.env_id.rpartition(":")[2], **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise UserError(f"env {cfg.env_id!r} needs a package that is not installed: {e}") from None
    except TypeError as e:
        if render_mode is not None and "render_mode" in str(e):
            raise UserError(f"env {cfg.env_id!r} cannot render: {e}") from None
        raise UserError(f"env {cfg.env_id!r} rejected env_kwargs {kwargs}: {e}") from None


def make_vec(cfg: EnvConfig, seed: int) -> gym.vector.VectorEnv:
    """`n_envs` copies of the env, sync (ours, envs/sync.py) or async (gymnasium's), resetting
    in the step that ends an episode (the final observation comes in info["final_obs"]),
    seeded seed, seed+1, ..."""
    check_id(cfg.env_id)
    env_id = cfg.env_id.rpartition(":")[2]
    try:
        if cfg.vectorization == "sync":
            env = SyncVectorEnv([lambda: gym.make(env_id, **cfg.env_kwargs)] * cfg.n_envs)
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
