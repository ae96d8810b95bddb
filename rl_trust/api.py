"""rl-trust as a library, in the habits of stable-baselines3.

    model = rl_trust.PPO("CartPole-v1", seed=0, n_steps=1024)
    model.learn(100_000)
    action, _ = model.predict(obs, deterministic=True)
    model.save("runs/cartpole")              # a run folder, as `rl-trust train` writes
    model = rl_trust.load("runs/cartpole")   # or PPO.load(path, env=...)

The model drives the same Trainer as `rl-trust train` / `resume`, so the same config and
seed give the same scalars either way; a run folder is the same format either way.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl_trust import checkpoint, config, train
from rl_trust.envs import check_id, make_vec
from rl_trust.envs.sync import SyncVectorEnv
from rl_trust.errors import UserError
from rl_trust.evaluate import act

EnvLike = str | gym.Env | gym.vector.VectorEnv | Callable[[], gym.Env]


def _vector_env(env: EnvLike, cfg: config.RunConfig) -> gym.vector.VectorEnv:
    """`n_envs` copies of the env the user gave: a registered id is made as the CLI makes it;
    a zero-argument callable is called once per copy; an Env instance is the first copy and
    deep copies of it the others; a VectorEnv is used as it is (its autoreset mode must be
    SAME_STEP: the rollout reads the final observation from the step that ends an episode)."""
    n = cfg.env.n_envs
    if isinstance(env, str):
        return make_vec(cfg.env, cfg.run.seed)
    if isinstance(env, gym.vector.VectorEnv):
        mode = env.metadata.get("autoreset_mode")
        if mode != gym.vector.AutoresetMode.SAME_STEP:
            raise UserError(
                f"a VectorEnv with autoreset_mode {mode} cannot be used: make it with "
                "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}"
            )
        vec = env
    elif isinstance(env, gym.Env):
        vec = SyncVectorEnv([lambda: env] + [lambda: copy.deepcopy(env)] * (n - 1))
    elif callable(env):
        vec = SyncVectorEnv([env] * n)
    else:
        raise UserError(
            f"env {env!r}: give a registered id, a gymnasium.Env, a zero-argument callable "
            "returning one, or a gymnasium.vector.VectorEnv"
        )
    vec.action_space.seed(cfg.run.seed)
    vec.observation_space.seed(cfg.run.seed)
    return vec


def _env_id(env: EnvLike) -> tuple[str, bool]:
    """The id the config records, and whether the env's preset applies (a registered id)."""
    if isinstance(env, str):
        return env, True
    spec = getattr(env, "spec", None)
    return (spec.id if isinstance(spec, gym.envs.registration.EnvSpec) else "custom"), False


class Agent:
    """What PPO and TRPO share: learn, predict, save and load over one Trainer."""

    algo = "ppo"
    default_preset = "ppo"

    def __init__(
        self,
        env: EnvLike,
        preset: str | None = None,
        seed: int = 0,
        run_dir: str | Path | None | bool = None,
        **config_values: Any,
    ):
        env_id, use_preset = _env_id(env)
        overrides = dict(config_values)
        if isinstance(env, gym.vector.VectorEnv):  # its copies are the ones it has
            overrides["n_envs"] = env.num_envs
        cfg = config.load(preset or self.default_preset, env_id, overrides, None, seed,
                          use_env_preset=use_preset)  # fmt: skip
        self._init(cfg, env, run_dir, state=None)

    def _init(self, cfg: config.RunConfig, env: EnvLike, run_dir, state, source=None) -> None:
        if cfg.agent.algo != self.algo:
            raise UserError(
                f"agent {cfg.agent_name!r} is a {cfg.agent.algo} agent: use "
                f"rl_trust.{cfg.agent.algo.upper()}"
            )
        self.config, self._env = cfg, env
        torch.set_num_threads(cfg.run.torch_threads)
        self.env = _vector_env(env, cfg)
        self.trainer = train.Trainer(cfg, self.env, None, state, source=source)
        if run_dir is False:  # (the folder only once the env and the learner are built)
            self.run_dir = None
        elif run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
            self.run_dir = train.claim_run_dir(run_dir or train.new_run_dir(cfg, Path("runs")))
            (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        else:
            self.run_dir = Path(run_dir)  # a loaded run: learn continues it
        self.trainer.run_dir = self.run_dir
        self._resumed = state is not None
        self._generator = torch.Generator().manual_seed(cfg.run.seed + 20_000)

    @property
    def policy(self) -> torch.nn.Module:
        """The actor-critic module (inspect it, or export it with torch.onnx / torch.export)."""
        return self.trainer.learner.agent.policy

    @property
    def num_timesteps(self) -> int:
        return self.trainer.learner.step

    def learn(
        self,
        total_timesteps: int,
        callback: Callable[[dict, train.Trainer], bool | None] | None = None,
        progress_bar: bool = False,
    ) -> Agent:
        """Train `total_timesteps` more env steps (continuing where the last call ended, as
        SB3's learn with reset_num_timesteps=False). `callback(metrics, trainer)` is called
        after every update with the metrics TensorBoard gets; False stops after a checkpoint.
        The run folder is locked while it trains; Ctrl-C checkpoints, then raises."""
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int | float):
            raise TypeError(f"total_timesteps={total_timesteps!r}: give a number of env steps")
        if not 1 <= total_timesteps <= 10**12 or total_timesteps != int(total_timesteps):
            raise ValueError(f"total_timesteps={total_timesteps!r}: a whole number in 1..10^12")
        total = self.num_timesteps + int(total_timesteps)
        lock = None if self.run_dir is None else train.RunLock(self.run_dir)
        try:
            if self.run_dir is not None:
                self._record_steps(total)
            self.trainer.open_log(resume=self._resumed)
            try:
                summary = self.trainer.learn(total, [], progress_bar, callback)
            except KeyboardInterrupt:
                self.trainer.save()
                raise
            if self.run_dir is not None:
                train.write_summary(self.run_dir, summary)
        finally:
            if lock is not None:
                lock.release()
        return self

    def _record_steps(self, total: int) -> None:
        cfg = self.config
        self.config = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, steps=total))
        self.trainer.cfg = self.config
        tmp = self.run_dir / "config.yaml.tmp"
        tmp.write_text(self.config.to_yaml())
        tmp.replace(self.run_dir / "config.yaml")

    def predict(self, observation, deterministic: bool = False) -> tuple[np.ndarray, None]:
        """Actions for one observation or a batch, as SB3's predict: the normalization
        statistics frozen, Box actions clipped to the bounds."""
        learner = self.trainer.learner
        batch, single = learner.agent.policy.obs_layout.batch_of(observation)
        actions = act(learner.agent.policy, learner.normalizer, batch, deterministic,
                      self._generator)  # fmt: skip
        return (actions[0] if single else actions), None

    def save(self, path: str | Path) -> Path:
        """A run folder at `path` (config.yaml and a checkpoint), which `rl-trust resume`,
        `rl-trust eval` and `load` take. `path` must be new or empty, or this model's own."""
        path = Path(path)
        learner = self.trainer.learner
        if self.run_dir is None or path.resolve() != self.run_dir.resolve():
            train.claim_run_dir(path)
            (path / "config.yaml").write_text(self.config.to_yaml())
        train.save(path, learner)
        return path

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None) -> Agent:
        """A model from a run folder (its newest verified checkpoint) or one checkpoint
        folder (run/checkpoints/step_N or best). Without `env`, the run's env id is made;
        `learn` continues the run in its folder."""
        path = Path(path)
        run_dir, which = path, None
        if path.parent.name == "checkpoints":
            run_dir = path.parent.parent
            which = path.name
        cfg = config.read_run(run_dir)
        if env is None:
            try:
                check_id(cfg.env.env_id)
            except UserError as e:
                raise UserError(f"{run_dir}: {e}: pass env= (the env it was trained on)") from None
        if which is None:
            source, state = checkpoint.newest(run_dir)
        elif which == checkpoint.BEST:
            source, state = path, checkpoint.load(path)
        else:
            source, state = checkpoint.newest(run_dir, checkpoint.step_of(path))
        model = cls.__new__(_class_for(cfg) if cls is Agent else cls)
        model._init(cfg, cfg.env.env_id if env is None else env, run_dir, state, source)
        return model

    def close(self) -> None:
        self.trainer.close()
        self.env.close()


class PPO(Agent):
    """PPO with the adaptive KL penalty (preset "ppo"), or any PPO preset: "ppo-clip",
    "ppo-fixed", a preset file."""

    algo, default_preset = "ppo", "ppo"


class TRPO(Agent):
    """TRPO (preset "trpo"), or the natural policy gradient ("npg")."""

    algo, default_preset = "trpo", "trpo"


def _class_for(cfg: config.RunConfig) -> type[Agent]:
    return {"ppo": PPO, "trpo": TRPO}[cfg.agent.algo]


def load(path: str | Path, env: EnvLike | None = None) -> Agent:
    """A PPO or TRPO model, whichever the run folder (or checkpoint) holds."""
    return Agent.load(path, env)
