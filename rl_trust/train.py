"""The one training loop shared by every agent: collect a batch, update, log, checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import random
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
from rl_trust.evaluate import run_episodes
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


class Learner:
    """Everything a checkpoint holds: the agent (policy, optimizer, β), normalization
    statistics, counters, every random state, and the rollout's episode statistics."""

    def __init__(self, cfg: RunConfig, env, state: dict | None = None):
        self.cfg, self.env, a = cfg, env, cfg.agent
        self.spaces = {
            "observation": str(env.single_observation_space),
            "action": str(env.single_action_space),
        }
        seed = cfg.run.seed
        self.agent = agents.build(a, env.single_observation_space, env.single_action_space, seed)
        self.normalizer = Normalizer(
            env.single_observation_space.shape, env.num_envs,
            obs=cfg.env.normalize_obs, reward=cfg.env.normalize_reward, gamma=a.gamma,
            clip_obs=cfg.env.clip_obs, clip_reward=cfg.env.clip_reward,
        )  # fmt: skip
        self.step, self.updates = 0, 0
        self.best_eval: float | None = None  # the best eval/mean_reward so far
        if state is not None:
            self._check_spaces(state)
            self.step, self.updates = int(state["step"]), int(state["updates"])
            self.best_eval = state.get("best_eval")
        # a resumed run starts fresh episodes, from env seeds no earlier segment used
        self.env_seed = seed + 7919 * self.updates
        self.collector = Collector(
            env, self.agent.policy, self.normalizer, a.n_steps, a.gamma, a.gae_lambda,
            self.env_seed,
        )  # fmt: skip
        if state is not None:
            self.load_state_dict(state)

    def _check_spaces(self, state: dict) -> None:
        saved = state.get("spaces", {})
        if saved and saved != self.spaces:
            raise UserError(
                f"the checkpoint was saved for observation space {saved['observation']} and "
                f"action space {saved['action']}; {self.cfg.env.env_id} has "
                f"{self.spaces['observation']} and {self.spaces['action']}"
            )

    def state_dict(self) -> dict:
        c = self.collector
        return {
            "step": self.step,
            "updates": self.updates,
            "best_eval": self.best_eval,
            "policy": self.agent.policy.state_dict(),
            "agent": self.agent.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "rng": {
                "rollout": c.rng.bit_generator.state,
                "agent": self.agent.generator.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": list(np.random.get_state()),
                "python": list(random.getstate()),
                "env_seed": self.env_seed,
            },
            "episodes": {
                "returns": list(c.episode_returns),
                "lengths": list(c.episode_lengths),
                "count": c.episodes,
            },
            "spaces": self.spaces,
            "config": self.cfg.to_dict(),
            "versions": versions(),
        }

    def load_state_dict(self, state: dict) -> None:
        c, rng = self.collector, state["rng"]
        try:
            self.agent.policy.load_state_dict(state["policy"])
            self.agent.load_state_dict(state["agent"])
            self.normalizer.load_state_dict(state["normalizer"])
        except (RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise UserError(f"the checkpoint does not fit this run's agent: {first}") from None
        self.agent.generator.set_state(rng["agent"])
        c.rng.bit_generator.state = rng["rollout"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(tuple(rng["numpy"]))
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        c.episode_returns.clear()
        c.episode_returns.extend(state["episodes"]["returns"])
        c.episode_lengths.clear()
        c.episode_lengths.extend(state["episodes"]["lengths"])
        c.episodes = int(state["episodes"]["count"])


def save(run_dir: Path, learner: Learner, name: str | None = None) -> None:
    """A checkpoint, or a UserError (exit 2) when the disk refuses it; older ones stay."""
    try:
        keep = learner.cfg.run.keep_checkpoints
        checkpoint.save(run_dir, learner.step, learner.state_dict(), keep, name)
    except OSError as e:
        raise UserError(
            f"cannot write a checkpoint at step {learner.step} in {run_dir}/checkpoints: "
            f"{e.strerror or e}; earlier checkpoints are intact"
        ) from None


class Evaluator:
    """Every `eval_every` steps: `eval_episodes` deterministic episodes on an env of its own
    (the same start states each time, seeds from the run's seed + 10000), logged as SB3's
    EvalCallback does; a new best mean return is saved as checkpoints/best/."""

    def __init__(self, cfg: RunConfig):
        self.cfg, r = cfg, cfg.run
        self.every, self.episodes, self.seed = r.eval_every, r.eval_episodes, r.seed + 10_000
        self.env = None
        if self.every:
            self.env = gym.make(cfg.env.env_id.rpartition(":")[2], **cfg.env.env_kwargs)

    def due(self, step: int, per_batch: int) -> bool:
        return bool(self.every) and step // self.every > (step - per_batch) // self.every

    def __call__(self, run_dir: Path, learner: Learner) -> dict[str, float]:
        returns, lengths = run_episodes(
            self.env, learner.agent.policy, learner.normalizer, self.episodes, True, self.seed,
            torch.Generator().manual_seed(self.seed),
        )  # fmt: skip
        mean = float(np.mean(returns))
        if learner.best_eval is None or mean > learner.best_eval:
            learner.best_eval = mean
            save(run_dir, learner, name="best")
        return {"eval/mean_reward": mean, "eval/mean_ep_length": float(np.mean(lengths)),
                "eval/best_mean_reward": learner.best_eval}  # fmt: skip

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def diagnose(run_dir: Path, error: Diverged, learner: Learner, batch) -> Path:
    """diverged.json: what was non-finite, in which update, and the batch's statistics."""

    def stats(x: torch.Tensor) -> dict:
        x = x.double()
        finite = x[torch.isfinite(x)]
        return {
            "non_finite": int((~torch.isfinite(x)).sum()),
            **({k: float(getattr(finite, k)()) for k in ("mean", "std", "min", "max")}
               if finite.numel() > 1 else {}),
        }  # fmt: skip

    report = {
        "error": str(error),
        "update": learner.updates + 1,
        "step": learner.step,
        "batch": {
            name: stats(getattr(batch, name))
            for name in ("obs", "actions", "log_probs", "values", "advantages", "returns")
        },
        "last_checkpoint": (found[-1].name if (found := checkpoint.list_checkpoints(run_dir))
                            else None),
    }  # fmt: skip
    path = Path(run_dir) / "diverged.json"
    path.write_text(json.dumps(report, indent=2))
    return path


def run(cfg: RunConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Train `cfg` into `run_dir` (or continue the run there); returns the summary."""
    run_dir = Path(run_dir)
    torch.set_num_threads(cfg.run.torch_threads)
    a = cfg.agent
    env = make_vec(cfg.env, cfg.run.seed)
    writer, evaluator = None, Evaluator(cfg)
    stop: list[int] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        state = None
        if resume:
            found = checkpoint.list_checkpoints(run_dir)
            if not found:
                raise UserError(f"{run_dir} has no complete checkpoint to resume from")
            state = checkpoint.load(found[-1])
        learner = Learner(cfg, env, state)
        agent, collector = learner.agent, learner.collector
        # a resumed run drops what was logged after its checkpoint (TensorBoard purges ≥ step+1)
        writer = RunWriter(run_dir, cfg, purge_step=learner.step + 1 if resume else None)

        def request_stop(signum, _frame):
            stop.append(signum)

        for s in handlers:
            signal.signal(s, request_stop)

        total, per_batch = cfg.run.steps, a.n_steps * env.num_envs
        every = cfg.run.checkpoint_every
        start_step, t0, update_seconds = learner.step, time.perf_counter(), 0.0
        bar = Progress(total, learner.step, progress)
        metrics: dict = {}
        try:
            while learner.step < total:
                if stop:
                    save(run_dir, learner)
                    code = 130 if stop[0] == signal.SIGINT else 143
                    raise Interrupted(code, run_dir, learner.step)
                batch = collector.collect()
                t_update = time.perf_counter()
                try:
                    metrics = agent.update(batch, progress_remaining=1.0 - learner.step / total)
                    metrics.update(rollout_metrics(collector, batch, agent.policy))
                    _check_finite(metrics, learner.updates + 1)
                except Diverged as e:
                    path = diagnose(run_dir, e, learner, batch)
                    raise Diverged(f"{e} (diagnostic: {path})") from None
                update_seconds += time.perf_counter() - t_update
                learner.step, learner.updates = learner.step + per_batch, learner.updates + 1
                fps = (learner.step - start_step) / (time.perf_counter() - t0)
                metrics["time/fps"] = fps
                metrics["time/updates"] = learner.updates
                step = learner.step
                if evaluator.due(step, per_batch):
                    metrics.update(evaluator(run_dir, learner))
                writer.write(metrics, step)
                if every and step // every > (step - per_batch) // every and step < total:
                    save(run_dir, learner)
                bar.update(step, progress_fields(metrics), fps)
        finally:
            bar.close()
        save(run_dir, learner)
        summary = {
            "agent": cfg.agent_name,
            "algo": a.algo,
            "env": cfg.env.env_id,
            "seed": cfg.run.seed,
            "steps": learner.step,
            "updates": learner.updates,
            "episodes": collector.episodes,
            "wall_time_s": time.perf_counter() - t0,
            "fps": (learner.step - start_step) / (time.perf_counter() - t0),
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
        evaluator.close()
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
