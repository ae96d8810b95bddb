"""rl-trust as a library, in the habits of stable-baselines3.

    model = rl_trust.PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=1024)  # or PPO(env)
    model.learn(100_000)
    action, _ = model.predict(obs, deterministic=True)
    model.save("runs/cartpole")              # a run folder, as `rl-trust train` writes
    model = rl_trust.load("runs/cartpole")   # or PPO.load(path, env=...)

The model drives the same Trainer as `rl-trust train` / `resume`, and its run folder goes
through the same RunFolder (rl_trust/runs.py), so the same config and seed give the same
scalars either way, a run folder is the same format either way, and the same guarantees
hold: a new model never adopts an existing folder, and `load` + `learn` continues the run
as `rl-trust resume` does (checkpoints later than the loaded one move to superseded/).
Nothing is written before the first `learn` (or `save`).
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

from rl_trust import checkpoint, config, runs, train
from rl_trust.envs import check_id, make_env, make_vec, pool
from rl_trust.envs import masks as masks_of
from rl_trust.envs.sync import SyncVectorEnv
from rl_trust.episodes import act
from rl_trust.errors import UserError, UserTypeError, one_line
from rl_trust.runs import API, RunFolder
from rl_trust.trainer import Trainer
from rl_trust.trainer import save as save_checkpoint

EnvLike = str | gym.Env | gym.vector.VectorEnv | Callable[[], gym.Env]

# SB3's names for its built-in networks: here, the built-in network for the observation
# space (an MLP, a CNN for images, one encoder per part of a Dict or Tuple).
SB3_POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")
# SB3's constructor arguments that are not config keys here, and what to do instead.
SB3_ONLY = {
    "tensorboard_log": "the run folder (run_dir=) holds the TensorBoard events",
    "policy_kwargs": "give its entries as keywords: net_arch=, activation= (activation_fn's "
    "name, e.g. 'tanh'), ortho_init=, log_std_init=",
    "use_sde": "there is no gSDE here",
    "sde_sample_freq": "there is no gSDE here",
    "stats_window_size": "the episode statistics cover the last 100 episodes",
}


def _env_name(env: Any) -> str:
    """How a message names the env the user gave: an id quoted, a function by its name, an
    instance by its class."""
    if isinstance(env, str):
        return repr(env)
    if callable(env) and not isinstance(env, gym.Env | gym.vector.VectorEnv):
        return getattr(env, "__name__", type(env).__name__)
    return type(env).__name__


def _vector_env(env: EnvLike, cfg: config.RunConfig) -> tuple[gym.vector.VectorEnv, bool]:
    """`n_envs` copies of the env the user gave, and whether it is ours to close: a
    registered id is made as the CLI makes it; a zero-argument callable is called once per
    copy; an Env instance is the first copy and deep copies of it the others; a VectorEnv is
    used as it is (its autoreset mode must be SAME_STEP: the rollout reads the final
    observation from the step that ends an episode). The env is checked first (its spaces,
    its first observation), so that a mistake is one line, not a traceback."""
    n, name = cfg.env.n_envs, _env_name(env)
    if isinstance(env, str):
        if cfg.env.vectorization == "envpool":
            pool.check(cfg.env)
        first = make_env(cfg.env)
        try:
            runs.probe(first, cfg, name)
        finally:
            first.close()
        return make_vec(cfg.env, cfg.run.seed), True
    if isinstance(env, gym.vector.VectorEnv):
        mode = env.metadata.get("autoreset_mode")
        if mode != gym.vector.AutoresetMode.SAME_STEP:
            raise UserError(
                f"a VectorEnv with autoreset_mode {mode} cannot be used: make it with "
                "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}"
            )
        if env.num_envs != n:
            raise UserError(
                f"the VectorEnv has {env.num_envs} envs: this model trains on n_envs={n}"
            )
        runs.check_trainable(env.single_observation_space, env.single_action_space, cfg, name)
        vec = env
    elif isinstance(env, gym.Env):
        runs.probe(env, cfg, name)
        vec = SyncVectorEnv([lambda: env] + [lambda: copy.deepcopy(env)] * (n - 1))
    elif callable(env):
        try:
            first = env()
        except Exception as e:  # the user's code
            raise UserError(f"env {name}() raised {one_line(e)}") from None
        runs.probe(first, cfg, f"{name}()")
        vec = SyncVectorEnv([lambda: first] + [env] * (n - 1))
    else:
        raise UserTypeError(
            f"env {runs._brief(env)}: give a registered id, a gymnasium.Env, a zero-argument "
            "callable returning one, or a gymnasium.vector.VectorEnv"
        )
    vec.action_space.seed(cfg.run.seed)
    vec.observation_space.seed(cfg.run.seed)
    return vec, False


def _env_id(env: EnvLike) -> tuple[str, bool]:
    """The id the config records, and whether the env's preset applies (a registered id)."""
    if isinstance(env, str):
        return env, True
    spec = getattr(env, "spec", None)
    return (spec.id if isinstance(spec, gym.envs.registration.EnvSpec) else "custom"), False


class _NoEnv:
    """The spaces of a saved model whose env is not at hand: enough to build the learner
    (and predict); stepping it is refused."""

    def __init__(self, obs_space: gym.Space, act_space: gym.Space, n: int, why: str):
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = gym.vector.utils.batch_space(obs_space, n)
        self.action_space = gym.vector.utils.batch_space(act_space, n)
        self.num_envs, self.why = n, why
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.provides_no_masks = True  # (envs/masks.py: there are no states to mask)

    def reset(self, seed=None, options=None):
        empty = gym.vector.utils.create_empty_array(self.single_observation_space, self.num_envs)
        return empty, {}

    def step(self, actions):
        raise UserError(f"this model has no env ({self.why}): give one with model.set_env(env)")

    def close(self) -> None:
        pass


def _env_of_arguments(me: str, policy_or_env, env, config_values: dict):
    """The env among a model's first arguments, as SB3 writes them (`PPO("MlpPolicy", env)`,
    `PPO(policy="MlpPolicy", env=env)`) or as rl-trust does (`PPO(env)`); an SB3 policy name
    is taken out of `config_values`. None where no env is given."""
    if config_values.get("policy") in SB3_POLICIES:  # PPO(policy="MlpPolicy", env=...)
        config_values.pop("policy")
        if policy_or_env is not None and env is None:
            policy_or_env, env = None, policy_or_env
    if isinstance(policy_or_env, str) and policy_or_env in SB3_POLICIES:
        if env is None:
            raise UserTypeError(
                f"{me}({policy_or_env!r}) needs the env: {me}({policy_or_env!r}, env)"
            )
    elif policy_or_env is not None and env is not None:
        raise UserTypeError(
            f"{me}({_env_name(policy_or_env)}, {_env_name(env)}): the second argument is "
            f"the env, after an SB3 policy name ({', '.join(SB3_POLICIES)}); give a preset "
            "as preset=..."
        )
    elif isinstance(policy_or_env, str) and policy_or_env.endswith("Policy"):
        raise UserError(
            f"policy {policy_or_env!r}: the built-in networks are {', '.join(SB3_POLICIES)} "
            "(all the same here: chosen by the observation space); a network of your own "
            "is policy='module:factory'"
        )
    else:
        env = policy_or_env if env is None else env
    return env


def _callback(callback) -> Callable | None:
    """The callback as the trainer calls it: f(metrics, trainer) → whether to stop, which a
    falsy answer of the user's (other than None) says (train.stops); a list of them runs
    each and stops when any says so. An SB3 BaseCallback is refused here, before anything
    is written."""
    if callback is None:
        return None
    if isinstance(callback, list | tuple):
        each = [_callback(c) for c in callback]

        def any_of(metrics, trainer):
            return any([c(metrics, trainer) for c in each])  # (each is called)

        return any_of
    if any(
        c.__name__ == "BaseCallback" and c.__module__.startswith("stable_baselines3")
        for c in type(callback).__mro__
    ):
        raise UserTypeError(
            f"callback={type(callback).__name__}(...) is a stable-baselines3 BaseCallback, "
            "which drives SB3's own model (its logger, VecEnv and buffers) and cannot run "
            "here: give a function callback(metrics, trainer) that returns False to stop "
            "(eval_every= and checkpoint_every= do what EvalCallback and CheckpointCallback do)"
        )
    if not callable(callback):
        raise UserTypeError(
            f"callback={repr(callback)[:60]}: give a function callback(metrics, trainer) "
            "(or a list of them); a falsy return other than None stops"
        )

    def stops(metrics, trainer):
        return train.stops(callback(metrics, trainer))

    return stops


def _whole(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise UserTypeError(f"{name}={value!r}: give a whole number in {low}..{high:.0e}")
    if not low <= value <= high or value != int(value):
        raise UserError(f"{name}={value!r}: give a whole number in {low}..{high:.0e}")
    return int(value)


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise UserTypeError(f"{name}={value!r}: give True or False")
    return bool(value)


class Agent:
    """What PPO and TRPO share: learn, predict, save and load over one Trainer."""

    algo = "ppo"
    default_preset = "ppo"

    def __init__(
        self,
        policy_or_env: str | EnvLike | None = None,
        env: EnvLike | None = None,
        preset: str | None = None,
        seed: int = 0,
        run_dir: str | Path | None | bool = None,
        **config_values: Any,
    ):
        """`PPO(env, ...)`, or as SB3 writes it, `PPO("MlpPolicy", env, ...)`."""
        me = type(self).__name__
        for key in set(config_values) & set(SB3_ONLY):
            raise UserError(f"{key}= is stable-baselines3's: {SB3_ONLY[key]}")
        verbose = config_values.pop("verbose", 0)
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise UserError(f"verbose={verbose!r}: give 0, 1 or 2 (1 and 2: progress lines)")
        env = _env_of_arguments(me, policy_or_env, env, config_values)
        if env is None:
            raise UserTypeError(f"{me}() needs an env: {me}(env) or {me}('MlpPolicy', env)")
        if not (run_dir is None or run_dir is False or isinstance(run_dir, str | Path)):
            raise UserTypeError(
                f"run_dir={run_dir!r}: give a folder path, None (a new folder "
                "under runs/) or False (none)"
            )
        if isinstance(run_dir, str | Path):
            runs.check_new(Path(run_dir), API)  # (refused now; claimed at the first learn)
        env_id, use_preset = _env_id(env)
        overrides = dict(config_values)
        if isinstance(env, gym.vector.VectorEnv):  # its copies are the ones it has
            overrides["n_envs"] = env.num_envs
        cfg = config.load(
            preset or self.default_preset,
            env_id,
            overrides,
            None,
            seed,
            use_env_preset=use_preset,
            where="keyword argument",
        )
        self._init(cfg, env, state=None, run_dir=run_dir)
        self.verbose = verbose

    def _init(self, cfg, env, state, source=None, run_dir=None, folder=None) -> None:
        if cfg.agent.algo != self.algo:
            raise UserError(
                f"agent {cfg.agent_name!r} is a {cfg.agent.algo} agent: use "
                f"rl_trust.{cfg.agent.algo.upper()}"
            )
        self.config = cfg
        torch.set_num_threads(cfg.run.torch_threads)
        if isinstance(env, _NoEnv):
            vec, self.env, self._owns_env = env, None, False
        else:
            vec, self._owns_env = _vector_env(env, cfg)
            self.env = vec
        self.trainer = Trainer(cfg, vec, None, state, source=source)
        self._run_dir_arg = run_dir  # None: a new folder under runs/ at the first learn
        self._folder: RunFolder | None = folder  # the run folder, once there is one
        self._continue = folder is not None  # a loaded run: the first learn continues it
        self._resumed = state is not None
        self._generator = torch.Generator().manual_seed(cfg.run.seed + 20_000)
        self.verbose = 0

    # ------------------------------------------------------------------ what SB3 has too

    @property
    def policy(self) -> torch.nn.Module:
        """The actor-critic module (inspect it, or export it with torch.onnx / torch.export)."""
        return self.trainer.learner.agent.policy

    @property
    def num_timesteps(self) -> int:
        """Env steps trained so far, over every learn (and before a load)."""
        return self.trainer.learner.step

    @property
    def observation_space(self) -> gym.Space:
        """The observation space of one env."""
        return self.trainer.env.single_observation_space

    @property
    def action_space(self) -> gym.Space:
        """The action space of one env."""
        return self.trainer.env.single_action_space

    @property
    def n_envs(self) -> int:
        """How many envs step side by side in a rollout."""
        return self.trainer.env.num_envs

    @property
    def device(self) -> torch.device:
        """Where the policy's parameters live (config key `device`)."""
        return next(self.policy.parameters(), torch.zeros(())).device

    @property
    def run_dir(self) -> Path | None:
        """The run folder learn writes to: None until the first learn (or with run_dir=False)."""
        return None if self._folder is None else self._folder.path

    def get_env(self) -> gym.vector.VectorEnv | None:
        """The vector env the model trains on; None for one loaded without an env."""
        return self.env

    def set_env(self, env: EnvLike) -> None:
        """Train on `env` from now on (an id, an instance, a callable or a VectorEnv): its
        spaces must be the model's."""
        cfg = self.config
        if isinstance(env, str) and env != cfg.env.env_id:
            cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, env_id=env))
        _check_env_spaces(env, self.observation_space, self.action_space)
        vec, owns = _vector_env(env, cfg)
        old = self.trainer
        try:
            trainer = Trainer(cfg, vec, None, old.learner.state_dict(), source="of this model")
        except UserError:
            if owns:
                vec.close()
            raise
        trainer.run_dir, trainer.writer, trainer.evaluator = old.run_dir, old.writer, old.evaluator
        trainer.metrics = old.metrics
        if self._owns_env and self.env is not None:
            self.env.close()
        self.trainer, self.env, self._owns_env, self.config = trainer, vec, owns, cfg

    def get_parameters(self) -> dict[str, dict]:
        """{"policy": the network's state_dict, "agent": the optimizer's and β's state}."""
        learner = self.trainer.learner
        return {"policy": learner.agent.policy.state_dict(), "agent": learner.agent.state_dict()}

    def set_parameters(self, load_path_or_dict: dict | str | Path, exact_match: bool = True):
        """Load the weights (and the optimizer's state, with "agent") from a dict as
        get_parameters gives, or from a run folder or checkpoint of the same spaces.
        exact_match: the dict must hold both "policy" and "agent"."""
        params = load_path_or_dict
        if isinstance(params, str | Path):
            folder, which = _folder_of(Path(params))
            path, state = folder.checkpoint(which)
            try:
                checkpoint.check_spaces(state, self.trainer.learner.spaces, "this model")
            except UserError as e:
                raise UserError(f"checkpoint {path} {e}") from None
            params = {"policy": state["policy"], "agent": state["agent"]}
        if not isinstance(params, dict):
            raise UserTypeError(
                f"set_parameters({runs._brief(params)}): give a dict as "
                "get_parameters() returns, or a run folder"
            )
        unknown = set(params) - {"policy", "agent"}
        missing = {"policy", "agent"} - set(params) if exact_match else set()
        if unknown or missing or not params:
            raise UserError(
                f"set_parameters: the keys are {sorted(params)}: give 'policy' and 'agent'"
                + (" (or exact_match=False for part of them)" if missing else "")
            )
        agent = self.trainer.learner.agent
        try:
            if "policy" in params:
                agent.policy.load_state_dict(params["policy"])
            if "agent" in params:
                agent.load_state_dict(params["agent"])
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"set_parameters: the parameters do not fit this model: {one_line(e)}"
            ) from None

    # ------------------------------------------------------------------ learn

    def learn(
        self,
        total_timesteps: int,
        callback=None,
        log_interval: int = 1,
        *,
        reset_num_timesteps: bool = False,
        progress_bar: bool | None = None,
    ) -> Agent:
        """Train `total_timesteps` more env steps (whole rollouts: the first at or past the
        total). reset_num_timesteps=True counts from 0 again, as SB3 does, into a new run
        folder. `callback(metrics, trainer)` is called after every update with the metrics
        TensorBoard gets; a falsy return other than None stops after a checkpoint. The run
        folder is written at the first learn and locked while it trains; Ctrl-C
        checkpoints, then raises. log_interval: TensorBoard gets every update here, so it
        only has to be a whole number ≥ 1. progress_bar: by default, as verbose= says."""
        total_timesteps = _whole("total_timesteps", total_timesteps, 1, 10**12)
        _whole("log_interval", log_interval, 1, 10**12)
        reset = _flag("reset_num_timesteps", reset_num_timesteps)
        progress = self.verbose > 0 if progress_bar is None else _flag("progress_bar", progress_bar)
        callback = _callback(callback)
        if self.env is None:
            raise UserError(
                f"this model has no env to learn on ({self.trainer.env.why}): give one with "
                "model.set_env(env), or load(path, env=...)"
            )
        learner = self.trainer.learner
        if reset and learner.step > 0:  # a new count, so a new run folder
            self._count_again()
        cfg = runs.with_steps(self.config, learner.step + total_timesteps)
        if self._folder is None and self._run_dir_arg is not False:
            path = None if self._run_dir_arg is None else Path(self._run_dir_arg)
            self._folder = RunFolder.create(cfg, path, Path("runs"), API)
        lock = None if self._folder is None else self._folder.lock()
        try:
            if self._folder is not None:
                if self._continue:  # load + learn: as `rl-trust resume --checkpoint`
                    self._folder.continue_from(learner.step, cfg)
                    self._continue = False
                else:
                    self._folder.write_config(cfg)
                self.trainer.run_dir = self._folder.path
            self.config = self.trainer.cfg = cfg
            self.trainer.open_log(resume=self._resumed)
            try:  # (in a run folder, learn writes summary.json)
                self.trainer.learn(cfg.run.steps, [], progress, callback)
            except KeyboardInterrupt:
                self.trainer.save()
                raise
        finally:
            if lock is not None:
                lock.release()
        return self

    def _count_again(self) -> None:
        """reset_num_timesteps=True: the steps count from 0 again, into a new run folder."""
        if isinstance(self._run_dir_arg, str | Path) and self._folder is not None:
            raise UserError(
                f"reset_num_timesteps=True starts the step count again, which run folder "
                f"{self._folder.path} cannot hold: make the model with run_dir=None"
            )
        self.trainer.close()
        self.trainer.run_dir = None
        self._folder, self._continue, self._resumed = None, False, False
        self.trainer.learner.step, self.trainer.learner.best_eval = 0, None

    # ------------------------------------------------------------------ predict

    def predict(
        self,
        observation,
        state=None,
        episode_start=None,
        deterministic: bool = False,
        action_masks=None,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation or a batch, as SB3's predict: the normalization
        statistics frozen, Box actions clipped to the bounds. `state` and `episode_start`
        are for recurrent policies (none here): the state returned is None. `action_masks`,
        as sb3-contrib's MaskablePPO: the observation's invalid-action mask (a batch: one
        per observation), True where an action is allowed; the action is never one it
        forbids (envs/masks.py says what a mask of each action space is)."""
        if isinstance(state, bool | np.bool_):
            raise UserTypeError(
                f"predict(obs, {state}): the second argument is the recurrent state, as in "
                f"SB3; write predict(obs, deterministic={state})"
            )
        deterministic = _flag("deterministic", deterministic)
        learner = self.trainer.learner
        policy = learner.agent.policy
        try:
            batch, single = policy.obs_layout.batch_of(observation)
        except UserError:
            raise
        except ValueError as e:
            raise UserError(str(e)) from None
        except (TypeError, IndexError, KeyError):
            raise UserError(
                f"observation {runs._brief(observation)}: expected one of "
                f"{self.observation_space} or a batch of them"
            ) from None
        if single:
            runs.check_observation(self.observation_space, observation, "observation")
        else:
            runs.check_observation_batch(self.observation_space, observation, "observation")
        masks = None
        if action_masks is not None:
            n = 1 if single else _rows(batch)
            space = self.action_space
            masks = masks_of.given(policy.family, space, action_masks, n, single)
        actions = act(policy, learner.normalizer, batch, deterministic, self._generator, masks)
        return (np.asarray(actions[0]) if single else actions), None

    # ------------------------------------------------------------------ save and load

    def save(self, path: str | Path) -> Path:
        """A run folder at `path` (config.yaml and a checkpoint), which `rl-trust resume`,
        `rl-trust eval` and `load` take. `path` must be new or empty, or this model's own."""
        path = Path(path)
        learner = self.trainer.learner
        if self._folder is not None and path.resolve() == self._folder.path.resolve():
            with self._folder.lock():
                if self._continue:
                    self._folder.continue_from(learner.step, self.config)
                    self._continue = False
                save_checkpoint(path, learner)
            return path
        folder = RunFolder.create(self.config, path, words=API)
        save_checkpoint(folder.path, learner)
        arg = self._run_dir_arg
        if (
            self._folder is None
            and isinstance(arg, str | Path)
            and Path(arg).resolve() == (path.resolve())
        ):  # the folder run_dir= named: learn continues in it
            self._folder = folder
        return path

    @classmethod
    def load(
        cls, path: str | Path, env: EnvLike | None = None, *, allow_import: bool = False
    ) -> Agent:
        """A model from a run folder (its newest verified checkpoint) or one checkpoint
        folder (run/checkpoints/step_N or best). Without `env`, the run's registered env is
        made; a run whose env cannot be made (one built in Python) loads without one: it
        predicts, and learns once given one (set_env). `learn` continues the run in its
        folder, as `rl-trust resume` does. A run whose config names a module (a `module:Env`
        id, a wrapper, a `policy=module:factory`) imports it only with allow_import=True."""
        allow_import = _flag("allow_import", allow_import)
        folder, which = _folder_of(Path(path))
        cfg = folder.config()
        if isinstance(env, str) and env != cfg.env.env_id:  # the id given, not the run's
            cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, env_id=env))
        trusted = cfg  # what will be imported: the env's module only when the run's id is made
        if env is not None and not isinstance(env, str):
            trusted = dataclasses.replace(
                cfg, env=dataclasses.replace(cfg.env, env_id="custom", wrappers=[])
            )
        folder.check_trust(trusted, allow_import)
        source, state = folder.checkpoint(which)
        klass = model_class(cfg.agent.algo) if cls is Agent else cls
        model = klass.__new__(klass)
        if env is None:
            env = _saved_env(cfg, state, source)
        else:
            saved = checkpoint.saved_spaces(state)
            if saved is not None:
                _check_env_spaces(env, *saved)
        model._init(cfg, env, state, source, folder=folder)
        return model

    def close(self) -> None:
        """Close the event file and the model's vector env."""
        self.trainer.close()
        if self.env is not None:
            self.env.close()


def _rows(batch) -> int:
    """Observations in a raw batch (a Dict's or Tuple's: its first part's)."""
    while isinstance(batch, dict | tuple | list):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return len(batch)


def _folder_of(path: Path) -> tuple[RunFolder, int | str | None]:
    """The run folder of a run folder or checkpoint path, and which checkpoint it names."""
    if not path.exists():
        raise UserError(f"{path} does not exist: give a run folder or one of its checkpoints")
    if path.parent.name == "checkpoints":
        if path.name == checkpoint.BEST:
            return RunFolder.open(path.parent.parent, API), checkpoint.BEST
        step = checkpoint.step_of(path)
        if step is None:
            raise UserError(f"{path} is not a checkpoint folder (step_N or best)")
        return RunFolder.open(path.parent.parent, API), step
    return RunFolder.open(path, API), None


def _saved_env(cfg: config.RunConfig, state: dict, source: Path) -> str | _NoEnv:
    """The run's env id when it can be made; else its spaces, from the checkpoint."""
    try:
        check_id(cfg.env.env_id)
        return cfg.env.env_id
    except UserError as e:
        why = (
            "it was trained on an env built in Python"
            if cfg.env.env_id == "custom"
            else f"its env cannot be made: {e}"
        )
    saved = checkpoint.saved_spaces(state)
    if saved is None:
        raise UserError(
            f"checkpoint {source} does not record its spaces (saved by an older rl-trust) and "
            f"{why}: pass env= (the env it was trained on)"
        )
    return _NoEnv(*saved, cfg.env.n_envs, why)


def _check_env_spaces(env: EnvLike, obs_space: gym.Space, act_space: gym.Space) -> None:
    """A UserError unless an env instance or VectorEnv has the model's spaces (an id or a
    callable is checked once made)."""
    if isinstance(env, gym.vector.VectorEnv):
        spaces = env.single_observation_space, env.single_action_space
    elif isinstance(env, gym.Env):
        spaces = env.observation_space, env.action_space
    else:
        return
    if str(spaces[0]) != str(obs_space) or str(spaces[1]) != str(act_space):
        raise UserError(
            f"env {_env_name(env)} has observation space {spaces[0]} and action space "
            f"{spaces[1]}; the model was trained on {obs_space} and {act_space}"
        )


class PPO(Agent):
    """PPO: by default clipping with the controlled KL penalty (preset "ppo"), or any PPO preset:
    "ppo-clip", "ppo-penalty", "ppo-fixed", a preset file."""

    algo, default_preset = "ppo", "ppo"


class TRPO(Agent):
    """TRPO (preset "trpo"), or the natural policy gradient ("npg")."""

    algo, default_preset = "trpo", "trpo"


def model_class(algo: str) -> type[Agent]:
    """The model class of an algorithm (a config's `agent.algo`): PPO or TRPO."""
    return {"ppo": PPO, "trpo": TRPO}[algo]


def load(path: str | Path, env: EnvLike | None = None, *, allow_import: bool = False) -> Agent:
    """A PPO or TRPO model, whichever the run folder (or checkpoint) holds."""
    return Agent.load(path, env, allow_import=allow_import)
