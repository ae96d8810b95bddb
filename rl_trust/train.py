"""The one training loop shared by every agent: collect a batch, update, log, checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml

from rl_trust import __version__, agents, checkpoint, config
from rl_trust.config import RunConfig
from rl_trust.envs import Normalizer, check_id, make_vec
from rl_trust.errors import Diverged, UserError
from rl_trust.logging import RunWriter
from rl_trust.policies import family_for, obs_dim
from rl_trust.rollout import Collector


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved. `code` is 130 or 143."""

    def __init__(self, code: int, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}")
        self.code, self.run_dir, self.step = code, run_dir, step


def new_run_dir(cfg: RunConfig, runs_root: Path) -> Path:
    """runs/<agent>-<env>-s<seed>-<time>/, never an existing folder."""
    env = cfg.env.env_id.replace("/", "_").replace(":", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{cfg.agent_name}-{env}-s{cfg.run.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def claim_run_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise UserError(
            f"run folder {path} already exists and is not empty: choose another --run-dir"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare(cfg: RunConfig, run_dir: Path | None, runs_root: Path) -> Path:
    """Check that the env exists and its spaces are supported, then claim the run folder
    and write the resolved config.yaml into it. Nothing is created when a check fails."""
    check_id(cfg.env.env_id)
    probe = gym.make(cfg.env.env_id.rpartition(":")[2], **cfg.env.env_kwargs)
    try:
        obs_dim(probe.observation_space)
        family_for(probe.action_space)
    finally:
        probe.close()
    run_dir = claim_run_dir(run_dir or new_run_dir(cfg, runs_root))
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    return run_dir


def read_run_config(run_dir: Path) -> RunConfig:
    """The resolved config a run was trained with (its config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not an rl-trust run folder (no config.yaml)")
    try:
        return config.from_dict(yaml.safe_load(path.read_text()))
    except yaml.YAMLError:
        raise UserError(f"{path} is not valid YAML") from None


def load_run_config(run_dir: Path, steps: int | None = None) -> RunConfig:
    """The config of an existing run, with a new step total for `resume`."""
    run_dir = Path(run_dir)
    cfg, path = read_run_config(run_dir), run_dir / "config.yaml"
    done = checkpoint.list_checkpoints(run_dir)
    done_steps = int(done[-1].name.removeprefix("step_")) if done else 0
    total = steps if steps is not None else cfg.run.steps
    if done_steps >= total:
        raise UserError(
            f"{run_dir} already has {done_steps} of {total} steps: "
            f"pass --steps larger than {done_steps}"
        )
    if total != cfg.run.steps:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, steps=total))
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(cfg.to_yaml())
        tmp.replace(path)
    return cfg


def versions() -> dict[str, str]:
    import gymnasium

    return {
        "rl_trust": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
    }


class Progress:
    """A tqdm bar on a terminal; a plain line every 10 s when stderr is piped."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.enabled, self.last_line = total, enabled, 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit="step", unit_scale=True, file=sys.stderr
            )
        self.step = initial

    def update(self, step: int, fields: dict[str, str], fps: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix(fields, refresh=False)
        elif self.enabled and (time.monotonic() - self.last_line > 10 or step >= self.total):
            self.last_line = time.monotonic()
            eta = (self.total - step) / fps if fps > 0 else float("nan")
            parts = " | ".join(f"{k} {v}" for k, v in fields.items())
            print(
                f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | {fps:.0f} steps/s"
                f" | {parts} | ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_finite(metrics: dict, update: int) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise Diverged(f"update {update} produced non-finite {', '.join(sorted(bad))}")


def run(cfg: RunConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Train `cfg` into `run_dir` (or continue the run there); returns the summary."""
    run_dir = Path(run_dir)
    torch.set_num_threads(cfg.run.torch_threads)
    seed, a = cfg.run.seed, cfg.agent
    env = make_vec(cfg.env, seed)
    writer = None
    stop: list[int] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        agent = agents.build(a, env.single_observation_space, env.single_action_space, seed)
        normalizer = Normalizer(
            env.single_observation_space.shape,
            env.num_envs,
            obs=cfg.env.normalize_obs,
            reward=cfg.env.normalize_reward,
            gamma=a.gamma,
            clip_obs=cfg.env.clip_obs,
            clip_reward=cfg.env.clip_reward,
        )
        step, updates = 0, 0
        state = None
        if resume:
            found = checkpoint.list_checkpoints(run_dir)
            if not found:
                raise UserError(f"{run_dir} has no complete checkpoint to resume from")
            state = checkpoint.load(found[-1])
            step, updates = int(state["step"]), int(state["updates"])
            agent.policy.load_state_dict(state["policy"])
            agent.load_state_dict(state["agent"])
            agent.generator.set_state(state["rng"]["agent"])
            normalizer.load_state_dict(state["normalizer"])
        # a resumed run starts fresh episodes, from seeds no earlier segment used
        collector = Collector(
            env,
            agent.policy,
            normalizer,
            a.n_steps,
            a.gamma,
            a.gae_lambda,
            seed if not resume else seed + 7919 * updates,
        )
        if state is not None:
            collector.rng.bit_generator.state = state["rng"]["rollout"]
            collector.episode_returns.extend(state["episodes"]["returns"])
            collector.episode_lengths.extend(state["episodes"]["lengths"])
            collector.episodes = int(state["episodes"]["count"])
        # a resumed run drops what was logged after its checkpoint (TensorBoard purges ≥ step+1)
        writer = RunWriter(run_dir, cfg, purge_step=step + 1 if resume else None)

        def snapshot() -> dict:
            return {
                "step": step,
                "updates": updates,
                "policy": agent.policy.state_dict(),
                "agent": agent.state_dict(),
                "normalizer": normalizer.state_dict(),
                "rng": {
                    "rollout": collector.rng.bit_generator.state,
                    "agent": agent.generator.get_state(),
                },
                "episodes": {
                    "returns": list(collector.episode_returns),
                    "lengths": list(collector.episode_lengths),
                    "count": collector.episodes,
                },
                "config": cfg.to_dict(),
                "versions": versions(),
            }

        def request_stop(signum, _frame):
            stop.append(signum)

        for s in handlers:
            signal.signal(s, request_stop)

        total, per_batch = cfg.run.steps, a.n_steps * env.num_envs
        every = cfg.run.checkpoint_every
        start_step, t0, update_seconds = step, time.perf_counter(), 0.0
        bar = Progress(total, step, progress)
        metrics: dict = {}
        try:
            while step < total:
                if stop:
                    checkpoint.save(run_dir, step, snapshot(), cfg.run.keep_checkpoints)
                    raise Interrupted(130 if stop[0] == signal.SIGINT else 143, run_dir, step)
                batch = collector.collect()
                t_update = time.perf_counter()
                metrics = agent.update(batch, progress_remaining=1.0 - step / total)
                update_seconds += time.perf_counter() - t_update
                step, updates = step + per_batch, updates + 1
                fps = (step - start_step) / (time.perf_counter() - t0)
                metrics.update(rollout_metrics(collector, batch, agent.policy))
                metrics["time/fps"] = fps
                metrics["time/updates"] = updates
                _check_finite(metrics, updates)
                writer.write(metrics, step)
                if every and step // every > (step - per_batch) // every and step < total:
                    checkpoint.save(run_dir, step, snapshot(), cfg.run.keep_checkpoints)
                bar.update(step, progress_fields(metrics), fps)
        finally:
            bar.close()
        checkpoint.save(run_dir, step, snapshot(), cfg.run.keep_checkpoints)
        summary = {
            "agent": cfg.agent_name,
            "algo": a.algo,
            "env": cfg.env.env_id,
            "seed": seed,
            "steps": step,
            "updates": updates,
            "episodes": collector.episodes,
            "wall_time_s": time.perf_counter() - t0,
            "fps": (step - start_step) / (time.perf_counter() - t0),
            "seconds": {**collector.seconds, "update": update_seconds},  # of this segment
            "final": {k: v for k, v in metrics.items() if isinstance(v, float | int)},
            "versions": versions(),
        }
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(run_dir / "summary.json")
        return summary
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        if writer is not None:
            writer.close()
        env.close()


def rollout_metrics(collector: Collector, batch, policy) -> dict[str, float]:
    out: dict[str, float] = {}
    if collector.episode_returns:
        out["rollout/ep_rew_mean"] = float(np.mean(collector.episode_returns))
        out["rollout/ep_len_mean"] = float(np.mean(collector.episode_lengths))
    var = batch.returns.var()
    out["train/explained_variance"] = (
        float(1 - (batch.returns - batch.values).var() / var) if var > 0 else 0.0
    )
    if policy.log_std is not None:
        out["train/std"] = float(policy.log_std.detach().exp().mean())
    return out


def progress_fields(m: dict) -> dict[str, str]:
    fields = {}
    if "rollout/ep_rew_mean" in m:
        fields["return"] = f"{m['rollout/ep_rew_mean']:.1f}"
    fields["KL"] = f"{m['kl/forward_mean']:.4f}"
    if "kl/beta" in m:
        fields["β"] = f"{m['kl/beta']:.3g}"
    return fields
