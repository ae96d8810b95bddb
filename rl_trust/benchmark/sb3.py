"""The stable-baselines3 side of every comparison: one adapter from an rl-trust config.

`sb3_kwargs` translates a resolved rl-trust config (RunConfig.to_dict, or the YAML of
`rl-trust config`) into SB3's PPO or sb3-contrib's TRPO arguments (sb3-contrib's MaskablePPO
for PPO on an env whose invalid-action masks the config uses) and the env set-up
(make_vec_env, VecNormalize); `sb3_caveats` lists what cannot be translated; `train`
runs it and returns steps, wall time, steps/s and the mean return of the last 100
episodes. `python -m rl_trust.benchmark.sb3 CONFIG RESULT` does that in its own process.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import yaml


def sb3_kwargs(cfg: dict) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An rl-trust config (RunConfig.to_dict / `rl-trust config` YAML) as SB3 arguments.

    Returns (algo_name, kwargs, env_kwargs):
      algo_name  "PPO" (stable_baselines3.PPO), "MaskablePPO" (sb3_contrib.MaskablePPO: PPO
                 where the config masks invalid actions, masked_env) or "TRPO"
                 (sb3_contrib.TRPO);
      kwargs     constructor arguments except `policy` and `env` (env_kwargs["policy"]
                 and the vec env), including seed, device and policy_kwargs;
      env_kwargs how to build the env: env_id, n_envs, seed, env_kwargs, wrappers (the
                 config's, as make_vec_env's wrapper_class) and vec_env ("dummy" or
                 "subproc") for make_vec_env, then `normalize`, the VecNormalize
                 arguments, or None for no VecNormalize; and `policy`, SB3's policy for
                 the observation space: CnnPolicy for images, MultiInputPolicy for a
                 Dict, MlpPolicy otherwise.
    """
    import torch

    run, env, agent = cfg["run"], cfg["env"], cfg["agent"]
    lr = float(agent["learning_rate"])
    if agent.get("lr_schedule", "constant") == "linear":
        learning_rate: Any = _LinearSchedule(lr)
    else:
        learning_rate = lr
    arch = [int(n) for n in agent["net_arch"]]
    policy = policy_name(env)
    policy_kwargs = {
        "net_arch": {"pi": list(arch), "vf": list(arch)},
        "activation_fn": {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[agent["activation"]],
        "log_std_init": float(agent["log_std_init"]),
        "ortho_init": bool(agent["ortho_init"]),
    }
    if policy != "MlpPolicy":  # rl-trust's PPO shares the encoder, its TRPO does not
        policy_kwargs["share_features_extractor"] = agent["algo"] == "ppo"
    common = {
        "learning_rate": learning_rate,
        "n_steps": int(agent["n_steps"]),
        "batch_size": int(agent["batch_size"]),
        "gamma": float(agent["gamma"]),
        "gae_lambda": float(agent["gae_lambda"]),
        "normalize_advantage": bool(agent["normalize_advantage"]),
        "target_kl": agent["target_kl"],
        "policy_kwargs": policy_kwargs,
        "seed": int(run["seed"]),
        "device": "cpu",
        "verbose": 0,
    }
    name, kwargs = _algo_kwargs(agent, env, common, policy_kwargs)
    return name, kwargs, _env_kwargs(run, env, agent, policy)


def _algo_kwargs(agent: dict, env: dict, common: dict, policy_kwargs: dict):
    """SB3's class and its own arguments beside the common ones: PPO's (MaskablePPO's on a
    masked env) or sb3-contrib TRPO's, its δ and damping per action dimension."""
    algo = agent["algo"]
    if algo == "ppo":
        name = "MaskablePPO" if masked_env(env) else "PPO"
        if name == "MaskablePPO":  # (its policies are for discrete actions: no log-std)
            del policy_kwargs["log_std_init"]
        kwargs = {
            **common,
            "n_epochs": int(agent["n_epochs"]),
            "clip_range": (
                _LinearSchedule(float(agent["clip_range"]))
                if agent.get("clip_range_schedule", "constant") == "linear"
                else float(agent["clip_range"])
            ),
            "clip_range_vf": agent["clip_range_vf"],
            "ent_coef": float(agent["ent_coef"]),
            "vf_coef": float(agent["vf_coef"]),
            "max_grad_norm": float(agent["max_grad_norm"]),
        }
    elif algo == "trpo":
        name, d = "TRPO", kl_dims(env)
        kwargs = {
            **common,
            "target_kl": float(agent["target_kl"]) / d,
            "cg_max_steps": int(agent["cg_max_steps"]),
            "cg_damping": float(agent["cg_damping"]) / d,
            "line_search_shrinking_factor": float(agent["line_search_shrinking_factor"]),
            "line_search_max_iter": int(agent["line_search_max_iter"]),
            "n_critic_updates": int(agent["n_critic_updates"]),
            "sub_sampling_factor": int(agent["sub_sampling_factor"]),
        }
    else:
        raise ValueError(f"no SB3 counterpart for algo {algo!r}")
    return name, kwargs


def _env_kwargs(run: dict, env: dict, agent: dict, policy: str) -> dict:
    """How SB3's side builds the env (make_vec_env, then VecNormalize where normalized)."""
    normalize = None
    if env["normalize_obs"] or env["normalize_reward"]:
        normalize = {
            "norm_obs": bool(env["normalize_obs"]),
            "norm_reward": bool(env["normalize_reward"]),
            "clip_obs": float(env["clip_obs"]),
            "clip_reward": float(env["clip_reward"]),
            "gamma": float(agent["gamma"]),
        }
    env_kwargs = {
        "env_id": env["env_id"],
        "n_envs": int(env["n_envs"]),
        "seed": int(run["seed"]),
        "env_kwargs": dict(env.get("env_kwargs") or {}),
        "wrappers": list(env.get("wrappers") or []),
        "policy": policy,
        "vec_env": "subproc" if env["vectorization"] in ("async", "envpool") else "dummy",
        "normalize": normalize,
    }
    return env_kwargs


def masked_env(env: dict) -> bool:
    """Whether the config's env section uses invalid-action masks: action_masking is not off
    and the env provides masks for an action space that takes them (envs/masks.py), as one
    env made and reset here shows."""
    setting = env.get("action_masking", "auto")
    if setting == "off":
        return False
    return _masks_of(
        env["env_id"],
        yaml.safe_dump(dict(env.get("env_kwargs") or {})),
        yaml.safe_dump(list(env.get("wrappers") or [])),
        setting,
    )


_masked_cache: dict[tuple, bool] = {}


def _masks_of(env_id: str, env_kwargs: str, wrappers: str, setting: str) -> bool:
    key = (env_id, env_kwargs, wrappers, setting)
    if key not in _masked_cache:
        from rl_trust.config import EnvConfig
        from rl_trust.envs import make_env, masks
        from rl_trust.nets.families import family_for

        cfg = EnvConfig(
            env_id=env_id, env_kwargs=yaml.safe_load(env_kwargs), wrappers=yaml.safe_load(wrappers)
        )
        from rl_trust.errors import UserError

        probe = make_env(cfg)
        try:
            _, info = probe.reset(seed=0)
            try:
                family = family_for(probe.action_space)
            except UserError:  # (an action space no policy takes: its trials crash, reported)
                family = None
            found = (
                None
                if family is None
                else masks.for_env(probe, info, setting, family, repr(env_id))
            )
        finally:
            probe.close()
        _masked_cache[key] = found is not None
    return _masked_cache[key]


def kl_dims(env: dict) -> int:
    """What sb3-contrib's TRPO divides the KL by: the number of action dimensions of a
    diagonal Gaussian (Box) or Bernoulli (MultiBinary) policy, else 1.

    sb3-contrib takes torch's element-wise KL of those distributions, shape (batch, d), and
    then `.mean()`: it bounds the per-state KL averaged over the d action dimensions, where
    the paper (and rl-trust) bound the per-state KL itself, the sum over dimensions
    (Categorical and MultiDiscrete KLs it sums too). Its KL and Fisher are ours divided by
    d, so the adapter passes δ/d and damping/d for our δ and damping: then the conjugate
    gradient, the step √(2δ/xᵀ(F+λI)x)·x and the line search's test are the same numbers
    on both sides (tests/test_sb3_reference.py, Hopper-v5).
    """
    import gymnasium as gym

    space = _spaces(env)[1]
    if isinstance(space, gym.spaces.Box | gym.spaces.MultiBinary):
        return int(math.prod(space.shape))
    return 1


def _spaces(env: dict):
    """The observation and action spaces of the env section's env, wrapped."""
    from rl_trust.config import EnvConfig
    from rl_trust.envs import make_env

    probe = make_env(
        EnvConfig(  # (imports a "module:Env-v0" id's module, which registers it)
            env_id=env["env_id"],
            env_kwargs=dict(env.get("env_kwargs") or {}),
            wrappers=list(env.get("wrappers") or []),
        )
    )
    spaces = probe.observation_space, probe.action_space
    probe.close()
    return spaces


def policy_name(env: dict) -> str:
    """SB3's policy for the env's observations: CnnPolicy for an image (SB3's rule, as
    rl-trust's), MultiInputPolicy for a Dict, MlpPolicy otherwise."""
    import gymnasium as gym

    from rl_trust.nets.observations import is_image

    space = _spaces(env)[0]
    if is_image(space):
        return "CnnPolicy"
    return "MultiInputPolicy" if isinstance(space, gym.spaces.Dict) else "MlpPolicy"


class _LinearSchedule:
    """lr · progress_remaining, as rl-trust's lr_schedule: linear (picklable)."""

    def __init__(self, lr: float):
        self.lr = lr

    def __call__(self, progress_remaining: float) -> float:
        return self.lr * progress_remaining

    def __repr__(self) -> str:  # what identifies the run (matrix.sb3_identity)
        return f"linear({self.lr!r})"

    def __eq__(self, other) -> bool:  # (matrix.config_change compares SB3's arguments)
        return isinstance(other, _LinearSchedule) and other.lr == self.lr

    def __hash__(self) -> int:
        return hash(("linear", self.lr))


def sb3_caveats(cfg: dict) -> list[str]:
    """Where the SB3 run cannot do what the rl-trust config asks (empty: a faithful copy)."""
    agent, env = cfg["agent"], cfg["env"]
    out = []
    if agent.get("policy"):
        out.append(
            f"policy={agent['policy']}: your own network has no SB3 counterpart here; SB3 "
            f"trains its MlpPolicy (net_arch {list(agent['net_arch'])})"
        )
    if agent.get("device") == "cuda":
        out.append("device=cuda: SB3 runs on the CPU here")
    if env.get("vectorization") == "envpool":
        out.append("vectorization=envpool: SB3 steps gymnasium's envs in SubprocVecEnv")
    if agent.get("precision", "float32") != "float32":
        out.append(f"precision={agent['precision']}: SB3 computes in float32")
    if masked_env(env):
        out.append(
            "invalid-action masks: SB3's side is sb3-contrib's MaskablePPO"
            + (
                ""
                if agent["algo"] == "ppo"
                else " (sb3-contrib's TRPO takes no masks: the benchmark runs MaskablePPO at "
                "ppo-clip's settings as the reference)"
            )
        )
    out += _ppo_caveats(agent) if agent["algo"] == "ppo" else _trpo_caveats(agent, env)
    if env["normalize_obs"] or env["normalize_reward"]:
        out.append("normalization: SB3 VecNormalize, rl-trust its own Normalizer (same stats rule)")
    observations = _spaces(env)[0]
    if env["normalize_obs"] and policy_name(env) != "MlpPolicy":
        out.append(
            "normalize_obs: SB3's VecNormalize normalizes pixels too; rl-trust only vector parts"
        )
    if type(observations).__name__ == "Tuple":
        out.append("Tuple observations: SB3 does not support them; its run will fail")
    return out


def _ppo_caveats(agent: dict) -> list[str]:
    out = []
    if not agent["clip"]:
        out.append(
            f"clip=false: SB3 PPO always clips, so it runs clipped PPO (clip_range="
            f"{agent['clip_range']})"
        )
    if agent["kl_penalty"] != "off":
        out.append(
            f"kl_penalty={agent['kl_penalty']} (β₀={agent['kl_beta']}): SB3 PPO has no KL "
            "penalty; the SB3 column is clipped PPO, a reference point, not the same agent"
        )
    return out


def _trpo_caveats(agent: dict, env: dict) -> list[str]:
    out = []
    if not agent["line_search"]:
        out.append("line_search=false (NPG): sb3-contrib TRPO always runs its line search")
    if agent["kl_direction"] == "forward":
        out.append(
            "kl_direction=forward: sb3-contrib TRPO bounds KL(π_θ‖π_old) (reverse); "
            "rl-trust bounds KL(π_old‖π_θ)"
        )
    d = kl_dims(env)
    if d > 1:
        out.append(
            f"sb3-contrib TRPO averages the KL over the {d} action dimensions: it is given "
            f"target_kl={float(agent['target_kl']) / d:g} and cg_damping="
            f"{float(agent['cg_damping']) / d:g}, the same trust region as ours"
        )
    if not math.isclose(float(agent["cg_tol"]), 1e-10):
        out.append(f"cg_tol={agent['cg_tol']}: sb3-contrib TRPO's CG tolerance is fixed 1e-10")
    out.append(
        "n_epochs/ent_coef/vf_coef/max_grad_norm have no sb3-contrib TRPO counterpart "
        "(unused by either side's TRPO)"
    )
    return out


def saved_step(folder: Path) -> int | None:
    """The step of the checkpoint `train` keeps in `folder`, None if there is none."""
    saved = _checkpoint_folder(folder)
    return None if saved is None else int(json.loads((saved / "meta.json").read_text())["step"])


def _checkpoint_folder(folder: Path) -> Path | None:
    """`folder`, or the one it was replacing when the process stopped mid-swap."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "meta.json").exists() and (candidate / "model.zip").exists():
            return candidate
    return None


def _saver(folder: Path, every: int, start: int):
    """An SB3 callback that saves the model (optimizer included) and the VecNormalize
    statistics into `folder` between rollouts, each time the steps pass a multiple of
    `every`: written beside it, then swapped in, so a kill leaves one whole checkpoint."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Saver(BaseCallback):
        last = start

        def _on_rollout_start(self) -> None:  # (after the previous update)
            n = self.model.num_timesteps
            if every and n // every > self.last // every:
                self.save(n)
                self.last = n

        def _on_step(self) -> bool:
            return True

        def save(self, n: int) -> None:
            tmp, old = (
                folder.with_name(folder.name + ".tmp"),
                folder.with_name(folder.name + ".old"),
            )
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.model.save(tmp / "model.zip")
            venv = self.model.get_vec_normalize_env()
            if venv is not None:
                venv.save(str(tmp / "vecnormalize.pkl"))
            (tmp / "meta.json").write_text(json.dumps({"step": n}))
            shutil.rmtree(old, ignore_errors=True)
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)

    return Saver()


def _make_env(env_id: str, **kwargs):
    """gymnasium.make(env_id), in a SubprocVecEnv worker too: a worker started afresh
    (forkserver) has not registered the ALE/ ids, so check_id registers them first."""
    import gymnasium as gym

    from rl_trust.envs import check_id

    check_id(env_id)
    return gym.make(env_id, **kwargs)


def _info_masks(env):
    """`env` with an action_masks() method (what MaskablePPO asks for) where it gives its
    masks in info["action_mask"] (gymnasium's convention, Taxi's); as it is otherwise."""
    import gymnasium as gym
    import numpy as np

    from rl_trust.envs import masks

    if masks._method_of(env) is not None:
        return env

    class InfoActionMasks(gym.Wrapper):
        mask = None

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            self.mask = info[masks.INFO_KEY]
            return obs, info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.mask = info[masks.INFO_KEY]
            return obs, reward, terminated, truncated, info

        def action_masks(self):
            return np.asarray(self.mask, bool)

    return InfoActionMasks(env)


def _wrap(env, wrappers: list, masked: bool):
    from rl_trust.envs import apply_wrappers

    env = apply_wrappers(env, wrappers)
    return _info_masks(env) if masked else env


def train(
    cfg: dict,
    tb_dir: Path | None = None,
    checkpoint: Path | None = None,
    device: str | None = None,
    vec_env: str | None = None,
) -> dict:
    """Train SB3's counterpart of `cfg` with its torch threads; returns what was measured
    (of this process: a continued run counts the steps and time since its checkpoint).
    With tb_dir, SB3's own logger writes its TensorBoard events there (SB3's tag names).
    With `checkpoint`, a folder: continue from the checkpoint there if there is one, and
    save one every run.checkpoint_every steps. `device` and `vec_env` ("dummy" or
    "subproc") replace what the adapter picks (the CPU; subproc for async only): the device
    check times SB3 on a GPU with each."""
    import numpy as np
    import torch

    torch.set_num_threads(int(cfg["run"].get("torch_threads", 1)))
    name, kwargs, env_kw = sb3_kwargs(cfg)
    if device is not None:
        kwargs["device"] = device
    if vec_env is not None:
        env_kw["vec_env"] = vec_env
    venv, model = _model(name, kwargs, env_kw, checkpoint)
    start = model.num_timesteps
    if tb_dir is not None:
        _log_to(model, tb_dir, start)
    total = int(cfg["run"]["steps"])
    every = int(cfg["run"].get("checkpoint_every", 0))
    callback = None if checkpoint is None else _saver(checkpoint, every, start)
    t0 = time.perf_counter()
    model.learn(
        total_timesteps=total - start,
        callback=callback,
        progress_bar=False,
        reset_num_timesteps=not start,
    )
    wall = time.perf_counter() - t0
    episodes = [float(ep["r"]) for ep in model.ep_info_buffer]
    result = {
        "algo": name,
        "steps": int(model.num_timesteps),
        "from_step": start,
        "wall_time_s": wall,
        "fps": (model.num_timesteps - start) / wall,
        "ep_rew_mean": float(np.mean(episodes)) if episodes else float("nan"),
        "episodes_in_buffer": len(episodes),
        "torch_threads": torch.get_num_threads(),
    }
    venv.close()
    return result


def _model(name: str, kwargs: dict, env_kw: dict, checkpoint: Path | None):
    """SB3's vec env and model: new, or continued from the checkpoint in `checkpoint` (the
    model, its optimizer, schedules' progress and episode statistics, VecNormalize's)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    if name == "PPO":
        from stable_baselines3 import PPO as Algo
    elif name == "MaskablePPO":
        from sb3_contrib import MaskablePPO as Algo
    else:
        from sb3_contrib import TRPO as Algo

    from rl_trust.envs import check_id

    check_id(env_kw["env_id"])  # (registers ALE/ ids)
    venv = make_vec_env(  # (gymnasium imports a "module:Env-v0" id's module, in each process)
        partial(_make_env, env_kw["env_id"]),
        n_envs=env_kw["n_envs"],
        seed=env_kw["seed"],
        env_kwargs=env_kw["env_kwargs"],
        vec_env_cls=SubprocVecEnv if env_kw["vec_env"] == "subproc" else DummyVecEnv,
        wrapper_class=partial(_wrap, wrappers=env_kw["wrappers"], masked=name == "MaskablePPO"),
    )
    saved = None if checkpoint is None else _checkpoint_folder(checkpoint)
    if saved is not None:
        if env_kw["normalize"] is not None:
            venv = VecNormalize.load(str(saved / "vecnormalize.pkl"), venv)
        return venv, Algo.load(saved / "model.zip", env=venv, device=kwargs.get("device", "auto"))
    if env_kw["normalize"] is not None:
        venv = VecNormalize(venv, **env_kw["normalize"])
    return venv, Algo(env_kw["policy"], venv, **kwargs)


def _log_to(model, tb_dir: Path, start: int) -> None:
    """SB3's own logger into tb_dir; a continued run drops what the cut-short process logged
    after its checkpoint."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat, configure

    logger = configure(str(tb_dir), ["tensorboard"])
    if start:
        from torch.utils.tensorboard import SummaryWriter

        for fmt in logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                fmt.writer.close()
                fmt.writer = SummaryWriter(str(tb_dir), purge_step=start + 1)
    model.set_logger(logger)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rl_trust.benchmark.sb3")
    parser.add_argument("config", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("tb_dir", type=Path, nargs="?")
    parser.add_argument("--checkpoint", type=Path, help="continue from and save to this folder")
    parser.add_argument("--device", help="SB3's device (default: the CPU)")
    parser.add_argument(
        "--vec-env", choices=["dummy", "subproc"], help="SB3's vec env (default: the adapter's)"
    )
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    result = train(cfg, args.tb_dir, args.checkpoint, args.device, args.vec_env)
    result["device"], result["vec_env"] = args.device or "cpu", args.vec_env
    args.result.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
