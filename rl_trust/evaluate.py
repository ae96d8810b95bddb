"""`rl-trust eval`: a trained policy on fresh episodes, its normalization statistics frozen."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl_trust import agents, checkpoint, config, runs
from rl_trust.envs import Normalizer, apply_wrappers, check_id, check_import, make_env
from rl_trust.episodes import run_episodes
from rl_trust.errors import UserError, one_line


def find_checkpoint(run_dir: Path, which: str) -> tuple[Path, dict]:
    """latest (the newest that reads back verified), best (kept by periodic evaluation) or
    a step number; the checkpoint's folder and its verified state."""
    if which == "latest":
        return checkpoint.newest(run_dir)
    if which == "best":
        best = Path(run_dir) / "checkpoints" / checkpoint.BEST
        if best.is_symlink() or not (best / checkpoint.STATE).is_file():
            raise UserError(f"{run_dir} has no best checkpoint (train with --set eval_every=N)")
        return best, checkpoint.load(best)
    if not which.isdigit():
        raise UserError(f"--checkpoint {which!r}: use latest, best or a step number")
    return checkpoint.newest(run_dir, int(which))


def _make_eval_env(cfg: config.RunConfig, run_dir: Path, render_mode: str | None) -> gym.Env:
    """The run's env (or the one --env names): a registered id, or a `module:Name` whose
    Name is a registered id, an Env class or a zero-argument factory."""
    env_id = cfg.env.env_id
    module, sep, name = env_id.rpartition(":")
    if sep:
        import importlib

        try:
            factory = getattr(importlib.import_module(module), name, None)
        except Exception as e:  # ImportError, or whatever the module's code raised
            raise UserError(
                f"env {env_id!r}: cannot import module {module!r} ({one_line(e)})"
            ) from None
    if sep and name not in gym.registry:  # (the module may have registered it)
        if not callable(factory):
            raise UserError(
                f"env {env_id!r}: module {module!r} has no registered id, Env class "
                f"or factory {name!r}"
            )
        try:
            env = factory(render_mode=render_mode) if render_mode else factory()
        except Exception as e:  # the user's code
            raise UserError(f"env {env_id!r}: {name}() raised {one_line(e)}") from None
        if not isinstance(env, gym.Env):
            raise UserError(
                f"env {env_id!r}: {name}() gave {type(env).__name__}, not a gymnasium.Env"
            )
        return apply_wrappers(env, cfg.env.wrappers)
    if not sep and env_id not in gym.registry:
        try:
            check_id(env_id)
        except UserError as e:
            raise UserError(
                f"{run_dir} was trained on env {env_id!r}, which rl-trust cannot make ({e}): "
                f"{runs.CLI.env}"
            ) from None
    return make_env(cfg.env, render_mode=render_mode)


def follow_camera(env: gym.Env) -> None:
    """Film a MuJoCo robot through its model's "track" camera, which follows it.

    gymnasium's default view of the v5 locomotion tasks is a free camera whose trackbodyid
    has no effect, so a hopper that hops leaves the picture within a few seconds. Envs
    without such a camera, and a camera the user chose through env_kwargs, are left alone.
    """
    import mujoco

    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is None or renderer.camera_id not in (None, -1):
        return
    cam = mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    if cam >= 0:
        renderer.camera_id = cam


def _check_arguments(episodes: int, seed: int | None, max_steps: int | None) -> None:
    if not 1 <= episodes <= 1_000_000:
        raise UserError(f"--episodes {episodes}: must be in 1..1000000")
    if seed is not None and not 0 <= seed < 2**32 - 1_000_000:
        raise UserError(f"--seed {seed}: must be in 0..{2**32 - 1_000_001}")
    if max_steps is not None and not 1 <= max_steps < 2**31:
        raise UserError(f"--max-steps {max_steps}: must be in 1..{2**31 - 1}")


def evaluate(
    run_dir: Path,
    which: str = "latest",
    episodes: int = 10,
    deterministic: bool = False,
    video: bool = False,
    seed: int | None = None,
    allow_import: bool = False,
    max_steps: int | None = None,
    env_spec: str | None = None,
) -> dict:
    """Run `episodes` episodes of the checkpoint's policy; returns (and writes) eval.json.
    `env_spec` (--env) evaluates on another env than the run's: a registered id, or
    `module:Class` (an Env class or a zero-argument factory)."""

    _check_arguments(episodes, seed, max_steps)
    run_dir = Path(run_dir)
    cfg = config.read_run(run_dir)
    cfg_env = cfg  # (the config with the env --env names)
    if env_spec is not None:
        check_import(env_spec, "--env", allow_import)
        cfg_env = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, env_id=env_spec))
    runs.check_trust(cfg_env, f"{run_dir}/config.yaml", allow_import)
    path, state = find_checkpoint(run_dir, which)
    seed = cfg.run.seed + 10_000 if seed is None else seed  # episodes training never saw

    videos = run_dir / "videos" / f"{path.name}-{'mode' if deterministic else 'sample'}"
    env = _open_env(cfg_env, run_dir, state, path, videos if video else None)
    torch.set_num_threads(cfg.run.torch_threads)
    try:
        policy, normalizer = _restore(cfg, env, state, path, seed)
        returns, lengths = run_episodes(
            env,
            policy,
            normalizer,
            episodes,
            deterministic,
            seed,
            torch.Generator().manual_seed(seed),
            max_steps or cfg.run.eval_max_steps,
            action_masking=cfg.env.action_masking,
            env_name=repr(cfg_env.env.env_id),
        )
    finally:
        env.close()

    return _write_result(
        run_dir,
        {
            "checkpoint": path.name,
            "step": int(state["step"]),
            "episodes": episodes,
            "deterministic": deterministic,
            "seed": seed,
            **_statistics(returns, lengths),
            "videos": sorted(str(p) for p in videos.glob("*.mp4")) if video else [],
        },
    )


def _statistics(returns: list[float], lengths: list[int]) -> dict:
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "std_length": float(np.std(lengths)),
        "returns": returns,
        "lengths": lengths,
    }


def _open_env(cfg_env, run_dir: Path, state: dict, path: Path, videos: Path | None):
    """The env to evaluate on, its spaces checked against the checkpoint's; filmed into
    `videos` (emptied first) where given."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering: MuJoCo
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # and pygame (classic control)
    env = _make_eval_env(cfg_env, run_dir, render_mode="rgb_array" if videos else None)
    spaces = {"observation": str(env.observation_space), "action": str(env.action_space)}
    try:
        checkpoint.check_spaces(state, spaces, cfg_env.env.env_id)
    except UserError as e:
        env.close()
        raise UserError(f"checkpoint {path} {e}") from None
    if videos is not None:
        follow_camera(env)
        shutil.rmtree(videos, ignore_errors=True)  # this evaluation's videos only
        env = gym.wrappers.RecordVideo(
            env, str(videos), lambda _: True, name_prefix="eval", disable_logger=True
        )
    return env


def _restore(cfg, env, state: dict, path: Path, seed: int):
    """The run's policy and its frozen observation statistics, as the checkpoint holds them."""
    policy = agents.build(cfg.agent, env.observation_space, env.action_space, seed).policy
    normalizer = Normalizer(  # (as many envs as training had: its state holds their returns)
        policy.obs_layout.norm_shape,
        cfg.env.n_envs,
        obs=cfg.env.normalize_obs,
        reward=False,
        gamma=cfg.agent.gamma,
        clip_obs=cfg.env.clip_obs,
        clip_reward=cfg.env.clip_reward,
    )
    try:
        policy.load_state_dict(state["policy"])
        normalizer.load_state_dict(state["normalizer"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"checkpoint {path} does not fit the run's network (net_arch?): {one_line(e)}"
        ) from None
    return policy, normalizer


def _write_result(run_dir: Path, result: dict) -> dict:
    """eval.json, written whole (a reader never sees half of it)."""
    tmp = run_dir / "eval.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(run_dir / "eval.json")
    return result
