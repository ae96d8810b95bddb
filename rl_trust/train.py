"""The one training loop shared by every agent: collect a batch, update, log, checkpoint."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import platform
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from rl_trust import __version__, agents, checkpoint, config, runs
from rl_trust import tags as T
from rl_trust.config import RunConfig
from rl_trust.envs import Normalizer, make_env, make_vec, pool
from rl_trust.errors import Diverged, UserError, one_line
from rl_trust.evaluate import run_episodes
from rl_trust.logging import RunWriter
from rl_trust.nets.observations import ObsBatch
from rl_trust.rollout import Collector
from rl_trust.runs import RunFolder


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved. `code` is 130 or 143."""

    def __init__(self, code: int, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}")
        self.code, self.run_dir, self.step = code, run_dir, step


def prepare(cfg: RunConfig, run_dir: Path | None, runs_root: Path) -> RunFolder:
    """Check that the env exists, its spaces are supported and its first observation fits
    its space, then claim the run folder (never an existing one) and write the resolved
    config.yaml into it. Nothing is created when a check fails."""
    if run_dir is not None:
        runs.check_new(run_dir)
    if cfg.env.vectorization == "envpool":
        pool.check(cfg.env)
    env = make_env(cfg.env)
    try:
        runs.probe(env, cfg, repr(cfg.env.env_id))
    finally:
        env.close()
    return RunFolder.create(cfg, run_dir, runs_root)


def load_run_config(run_dir: Path, steps: int | None = None) -> RunConfig:
    """The config of an existing run, with a new step total for `resume` (written to its
    config.yaml by `run`, once the checkpoint it resumes from has been verified)."""
    cfg = config.read_run(run_dir)
    return cfg if steps is None else runs.with_steps(cfg, steps)


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
            left = max(self.total - step, 0)  # (whole rollouts: the last may pass the total)
            eta = f"ETA {left / fps:.0f}s" if fps > 0 else "ETA unknown"
            parts = " | ".join(f"{k} {v}" for k, v in fields.items())
            print(
                f"step {step}/{max(self.total, step)} ({min(100 * step / self.total, 100):.0f}%)"
                f" | {fps:.0f} steps/s | {parts} | {eta}",
                file=sys.stderr,
                flush=True,
            )
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def stops(answer) -> bool:
    """Whether a callback's answer stops training: any falsy value but None (which a
    function without a return statement gives) stops: False, 0, numpy's False_."""
    if answer is None:
        return False
    try:
        return not bool(answer)
    except (TypeError, ValueError):  # (an array of several values has no truth value)
        raise UserError(
            f"the callback returned {runs._brief(answer)}: return a bool (False stops)"
        ) from None


def check_env_output(collector: Collector, batch, env_id: str) -> None:
    """A Diverged naming the env when its rewards or observations were not finite: what the
    update would otherwise report as non-finite gradients."""
    rewards = collector.rewards
    if not np.isfinite(rewards).all():
        bad = rewards[~np.isfinite(rewards)][0]
        raise Diverged(f"env {env_id} returned a non-finite reward ({bad}) in this rollout")
    parts = batch.obs.parts.items() if isinstance(batch.obs, ObsBatch) else [("", batch.obs)]
    for name, x in parts:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not torch.isfinite(x).all():
            where = f" (part {name!r})" if name else ""
            raise Diverged(f"env {env_id} returned a non-finite observation{where} in this rollout")


def kept_line(run_dir: Path) -> str:
    found = checkpoint.list_checkpoints(run_dir)
    return (
        f"the last good checkpoint is kept ({found[-1].name})"
        if found
        else "no checkpoint had been written yet"
    )


def _check_finite(metrics: dict, update: int) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise Diverged(f"update {update} produced non-finite {', '.join(sorted(bad))}")


class Learner:
    """Everything a checkpoint holds: the agent (policy, optimizer, β), normalization
    statistics, counters, every random state, and the rollout's episode statistics."""

    def __init__(self, cfg: RunConfig, env, state: dict | None = None):
        self.cfg, self.env, a = cfg, env, cfg.agent
        seed = cfg.run.seed
        self.agent = agents.build(a, env.single_observation_space, env.single_action_space, seed)
        self.spaces = {
            "observation": str(env.single_observation_space),
            "action": str(env.single_action_space),
            # (the spaces themselves: a saved model predicts without its env)
            "observation_space": checkpoint.describe_space(env.single_observation_space),
            "action_space": checkpoint.describe_space(env.single_action_space),
        }
        self.normalizer = Normalizer(
            self.agent.policy.obs_layout.norm_shape,
            env.num_envs,
            obs=cfg.env.normalize_obs,
            reward=cfg.env.normalize_reward,
            gamma=a.gamma,
            clip_obs=cfg.env.clip_obs,
            clip_reward=cfg.env.clip_reward,
        )
        self.step, self.updates = 0, 0
        self.best_eval: float | None = None  # the best eval/mean_reward so far
        if state is not None:
            checkpoint.check_spaces(state, self.spaces, cfg.env.env_id)
            self.step, self.updates = int(state["step"]), int(state["updates"])
            self.best_eval = state.get("best_eval")
        # a resumed run starts fresh episodes, from env seeds no earlier segment used
        self.env_seed = seed + 7919 * self.updates
        self.collector = Collector(
            env,
            self.agent.policy,
            self.normalizer,
            a.n_steps,
            a.gamma,
            a.gae_lambda,
            self.env_seed,
            cfg.env.action_masking,
            repr(cfg.env.env_id),
        )
        if state is not None:
            self.load_state_dict(state)
        self.collector.steps_done = self.step

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
        try:
            self._load_state_dict(state)
        except (
            RuntimeError,
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            ArithmeticError,
        ) as e:
            raise UserError(f"does not fit this run's agent: {one_line(e)}") from None

    def _load_state_dict(self, state: dict) -> None:
        c, rng = self.collector, state["rng"]
        self.agent.policy.load_state_dict(state["policy"])
        self.agent.load_state_dict(state["agent"])
        self.normalizer.load_state_dict(state["normalizer"])
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
    except (OSError, SafetensorError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip()
        raise UserError(
            f"cannot write a checkpoint at step {learner.step} in {run_dir}/checkpoints: "
            f"{why}; earlier checkpoints are intact"
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
            self.env = make_env(cfg.env)

    def due(self, step: int, per_batch: int) -> bool:
        return bool(self.every) and step // self.every > (step - per_batch) // self.every

    def __call__(self, run_dir: Path, learner: Learner, stop: list) -> dict[str, float]:
        """The evaluation's tags; none when a signal (in `stop`) cut it short."""
        returns, lengths = run_episodes(
            self.env,
            learner.agent.policy,
            learner.normalizer,
            self.episodes,
            True,
            self.seed,
            torch.Generator().manual_seed(self.seed),
            self.cfg.run.eval_max_steps,
            stop=lambda: bool(stop),
            action_masking=self.cfg.env.action_masking,
            env_name=repr(self.cfg.env.env_id),
        )
        if len(returns) < self.episodes:
            return {}
        mean = float(np.mean(returns))
        if learner.best_eval is None or mean > learner.best_eval:
            learner.best_eval = mean
            save(run_dir, learner, name="best")
        return {
            T.EVAL_MEAN_REWARD: mean,
            T.EVAL_MEAN_EP_LENGTH: float(np.mean(lengths)),
            T.EVAL_BEST_MEAN_REWARD: learner.best_eval,
        }

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
            **(
                {k: float(getattr(finite, k)()) for k in ("mean", "std", "min", "max")}
                if finite.numel() > 1
                else {}
            ),
        }

    fields = {
        name: getattr(batch, name)
        for name in ("obs", "actions", "log_probs", "values", "advantages", "returns")
    }
    if isinstance(batch.obs, ObsBatch):  # a Dict or Tuple space: each part
        del fields["obs"]
        fields = {**{f"obs.{k}": v for k, v in batch.obs.parts.items()}, **fields}
    report = {
        "error": str(error),
        "update": learner.updates + 1,
        "step": learner.step,
        "batch": {name: stats(x) for name, x in fields.items()},
        "last_checkpoint": (
            found[-1].name if (found := checkpoint.list_checkpoints(run_dir)) else None
        ),
    }
    path = Path(run_dir) / "diverged.json"
    path.write_text(json.dumps(report, indent=2))
    return path


class Trainer:
    """A learner with its env, and, given a run folder, its TensorBoard writer, evaluator and
    checkpoints: what `rl-trust train` / `resume` and the Python API (rl_trust.PPO, TRPO)
    drive, one rollout and update at a time. It takes no signals and no lock; its caller
    does (run, below; the API)."""

    def __init__(
        self,
        cfg: RunConfig,
        env,
        run_dir: Path | None,
        state: dict | None = None,
        source: Path | None = None,
    ):
        self.cfg, self.env = cfg, env
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.writer, self.evaluator = None, None
        try:
            self.learner = Learner(cfg, env, state)
        except UserError as e:
            raise UserError(f"checkpoint {source} {e}") from None
        self.metrics: dict = {}
        self.seconds = {"update": 0.0}

    def open_log(self, resume: bool) -> None:
        """The event file (a resumed run drops what was logged after its checkpoint:
        TensorBoard purges ≥ step + 1) and the evaluator."""
        if self.run_dir is None or self.writer is not None:
            return
        purge = self.learner.step + 1 if resume else None
        try:
            charts = self.learner.agent.charts()
            if self.learner.collector.masks is not None:  # what masking saves, per rollout
                charts["invalid actions: the unmasked policy's probability of one"] = [
                    "Multiline",
                    [T.exact(T.ROLLOUT_INVALID_ACTION_SHARE)],
                ]
            self.writer = RunWriter(self.run_dir, self.cfg, charts, purge_step=purge)
        except OSError as e:
            why = e.strerror or e
            raise UserError(f"cannot write TensorBoard events in {self.run_dir}: {why}") from None
        self.evaluator = Evaluator(self.cfg)

    def save(self, name: str | None = None) -> None:
        if self.run_dir is not None:
            save(self.run_dir, self.learner, name)

    def learn(self, total: int, stop: list, progress: bool = False, callback=None) -> dict:
        """Collect and update until `total` env steps (the first whole rollout at or past it),
        then checkpoint. `stop` (signals received) ends it early with a checkpoint, as does
        `callback(metrics, trainer)` returning False; returns the summary of this segment."""
        learner, cfg, env = self.learner, self.cfg, self.env
        collector, run_dir = learner.collector, self.run_dir
        per_batch, every = cfg.agent.n_steps * env.num_envs, cfg.run.checkpoint_every
        start_step, t0 = learner.step, time.perf_counter()
        bar = Progress(total, learner.step, progress)
        try:
            while learner.step < total:
                if stop:
                    if learner.step > start_step:  # (otherwise its checkpoint is the newest)
                        self.save()
                    code = 130 if stop[0] == signal.SIGINT else 143
                    raise Interrupted(code, run_dir, learner.step)
                batch = collector.collect()
                if stop:  # (no update: the loop's top keeps what the last one gave)
                    continue
                metrics = self._update(batch, total)
                learner.step, learner.updates = learner.step + per_batch, learner.updates + 1
                fps = (learner.step - start_step) / (time.perf_counter() - t0)
                metrics[T.TIME_FPS] = fps
                metrics[T.TIME_UPDATES] = learner.updates
                step = learner.step
                if self.evaluator is not None and self.evaluator.due(step, per_batch):
                    metrics.update(self.evaluator(run_dir, learner, stop))
                if self.writer is not None:
                    self.writer.write(metrics, step)
                self.metrics = metrics
                if callback is not None and stops(callback(metrics, self)):
                    break
                if every and step // every > (step - per_batch) // every and step < total:
                    self.save()
                bar.update(step, progress_fields(metrics), fps)
        finally:
            bar.close()
        self.save()
        return self._summary(start_step, t0)

    def _update(self, batch, total: int) -> dict:
        """The batch checked, the agent updated on it; the update's metrics. Where the env's
        output or the update is not finite, a run folder gets a diagnostic."""
        learner = self.learner
        try:
            check_env_output(learner.collector, batch, self.cfg.env.env_id)
            t_update = time.perf_counter()
            metrics = learner.agent.update(batch, progress_remaining=1.0 - learner.step / total)
            metrics.update(rollout_metrics(learner.collector, batch, learner.agent.policy))
            _check_finite(metrics, learner.updates + 1)
        except Diverged as e:
            if self.run_dir is None:
                raise
            path = diagnose(self.run_dir, e, learner, batch)
            raise Diverged(f"{e} (diagnostic: {path}); {kept_line(self.run_dir)}") from None
        release_freed_memory()
        self.seconds["update"] += time.perf_counter() - t_update
        return metrics

    def _summary(self, start_step: int, t0: float) -> dict:
        """This segment's summary (summary.json)."""
        cfg, learner, collector = self.cfg, self.learner, self.learner.collector
        return {
            "agent": cfg.agent_name,
            "algo": cfg.agent.algo,
            "env": cfg.env.env_id,
            "seed": cfg.run.seed,
            "steps": learner.step,
            "updates": learner.updates,
            "episodes": collector.episodes,
            "wall_time_s": time.perf_counter() - t0,
            "fps": (learner.step - start_step) / (time.perf_counter() - t0),
            "seconds": {**collector.seconds, **self.seconds},  # (the collector's: since built)
            "final": {k: v for k, v in self.metrics.items() if isinstance(v, float | int)},
            "versions": versions(),
        }

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None


def run(
    cfg: RunConfig,
    run_dir: Path | RunFolder,
    *,
    resume: bool = False,
    progress: bool = True,
    from_step: int | None = None,
) -> dict:
    """Train `cfg` into `run_dir` (or continue the run there from its newest verified
    checkpoint, or the one at `from_step`); returns the summary. The run folder is locked
    against a second writer throughout; SIGINT / SIGTERM stop it with a checkpoint."""
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    stop: list[int] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum, _frame):
        stop.append(signum)

    for s in handlers:
        signal.signal(s, request_stop)
    lock, env, trainer = folder.lock(), None, None
    try:
        torch.set_num_threads(cfg.run.torch_threads)
        path, state = folder.resume_point(cfg, from_step) if resume else (None, None)
        env = make_vec(cfg.env, cfg.run.seed)
        trainer = Trainer(cfg, env, folder.path, state, source=path)
        if resume:
            folder.continue_from(trainer.learner.step, cfg)
        trainer.open_log(resume)
        summary = trainer.learn(cfg.run.steps, stop, progress)
        folder.write_summary(summary)
        return summary
    finally:
        if trainer is not None:
            trainer.close()
        if env is not None:
            env.close()
        lock.release()
        for s, h in handlers.items():
            signal.signal(s, h)


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the memory the update freed back to the OS. An update allocates and frees blocks
    of tens of MB (a minibatch of pixels as floats: 29 MB on Atari) among small ones; glibc
    keeps the freed pages, so without this the resident size of a long image run creeps up
    update after update (Breakout: 597 MiB at 16k steps, 707-737 MiB at 500k)."""
    if _trim is not None:
        _trim(0)


def rollout_metrics(collector: Collector, batch, policy) -> dict[str, float]:
    out: dict[str, float] = {}
    if collector.episode_returns:
        out[T.ROLLOUT_EP_REW_MEAN] = float(np.mean(collector.episode_returns))
        out[T.ROLLOUT_EP_LEN_MEAN] = float(np.mean(collector.episode_lengths))
    var = batch.returns.var()
    out[T.TRAIN_EXPLAINED_VARIANCE] = (
        float(1 - (batch.returns - batch.values).var() / var) if var > 0 else 0.0
    )
    if policy.log_std is not None:
        out[T.TRAIN_STD] = float(policy.log_std.detach().exp().mean())
    if collector.invalid_share is not None:
        out[T.ROLLOUT_INVALID_ACTION_SHARE] = collector.invalid_share
    return out


def progress_fields(m: dict) -> dict[str, str]:
    fields = {}
    if T.ROLLOUT_EP_REW_MEAN in m:
        fields["return"] = f"{m['rollout/ep_rew_mean']:.1f}"
    fields["KL"] = f"{m['kl/forward_mean']:.4f}"
    if T.KL_BETA in m:
        fields["β"] = f"{m['kl/beta']:.3g}"
    return fields
