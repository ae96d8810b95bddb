"""`rl-trust eval`: a trained policy on fresh episodes, its normalization statistics frozen."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl_trust import agents, checkpoint
from rl_trust.envs import Normalizer, check_id
from rl_trust.errors import UserError
from rl_trust.policies import ActorCritic


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """latest, best (kept by periodic evaluation) or a step number."""
    found = checkpoint.list_checkpoints(run_dir)
    if which == "latest":
        if not found:
            raise UserError(f"{run_dir} has no complete checkpoint")
        return found[-1]
    if which == "best":
        best = Path(run_dir) / "checkpoints" / "best"
        if not (best / checkpoint.STATE).is_file():
            raise UserError(f"{run_dir} has no best checkpoint (train with --set eval_every=N)")
        return best
    if not which.isdigit():
        raise UserError(f"--checkpoint {which!r}: use latest, best or a step number")
    for path in found:
        if int(path.name.removeprefix("step_")) == int(which):
            return path
    steps = ", ".join(p.name.removeprefix("step_").lstrip("0") for p in found) or "none"
    raise UserError(f"{run_dir} has no checkpoint at step {which} (kept: {steps})")


@torch.no_grad()
def run_episodes(
    env: gym.Env,
    policy: ActorCritic,
    normalizer: Normalizer,
    episodes: int,
    deterministic: bool,
    seed: int,
    generator: torch.Generator,
) -> tuple[list[float], list[int]]:
    """Whole episodes of `policy` (its mode, or samples), observations normalized with
    the statistics frozen; episode k starts from seed + k. Returns returns and lengths."""
    fam, training = policy.family, normalizer.training
    normalizer.training = False
    returns, lengths = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total, length = False, 0.0, 0
        while not done:
            x = policy.preprocess_numpy(normalizer.obs(np.asarray(obs)[None], update=False))
            params = policy.dist_params(torch.from_numpy(x))
            action = fam.mode(params) if deterministic else fam.sample(params, generator)
            obs, reward, terminated, truncated, _ = env.step(fam.to_env(action.numpy())[0])
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    normalizer.training = training
    return returns, lengths


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


def evaluate(
    run_dir: Path,
    which: str = "latest",
    episodes: int = 10,
    deterministic: bool = False,
    video: bool = False,
    seed: int | None = None,
) -> dict:
    """Run `episodes` episodes of the checkpoint's policy; returns (and writes) eval.json."""
    from rl_trust.train import read_run_config  # (train imports run_episodes from here)

    if episodes < 1:
        raise UserError(f"--episodes {episodes}: must be ≥ 1")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    path = find_checkpoint(run_dir, which)
    state = checkpoint.load(path)
    seed = cfg.run.seed + 10_000 if seed is None else seed  # episodes training never saw

    check_id(cfg.env.env_id)
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering: MuJoCo
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # and pygame (classic control)
    env = gym.make(
        cfg.env.env_id.rpartition(":")[2],
        render_mode="rgb_array" if video else None,
        **cfg.env.env_kwargs,
    )
    videos = run_dir / "videos" / f"{path.name}-{'mode' if deterministic else 'sample'}"
    if video:
        follow_camera(env)
        shutil.rmtree(videos, ignore_errors=True)  # this evaluation's videos only
        env = gym.wrappers.RecordVideo(
            env, str(videos), lambda _: True, name_prefix="eval", disable_logger=True
        )
    agent = agents.build(cfg.agent, env.observation_space, env.action_space, seed)
    policy = agent.policy
    policy.load_state_dict(state["policy"])
    normalizer = Normalizer(
        env.observation_space.shape, 1, obs=cfg.env.normalize_obs, reward=False,
        gamma=cfg.agent.gamma, clip_obs=cfg.env.clip_obs, clip_reward=cfg.env.clip_reward,
    )  # fmt: skip
    normalizer.load_state_dict(state["normalizer"])

    returns, lengths = run_episodes(
        env, policy, normalizer, episodes, deterministic, seed, torch.Generator().manual_seed(seed)
    )
    env.close()

    result = {
        "checkpoint": path.name,
        "step": int(state["step"]),
        "episodes": episodes,
        "deterministic": deterministic,
        "seed": seed,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "std_length": float(np.std(lengths)),
        "returns": returns,
        "lengths": lengths,
        "videos": sorted(str(p) for p in videos.glob("*.mp4")) if video else [],
    }
    tmp = run_dir / "eval.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(run_dir / "eval.json")
    return result
