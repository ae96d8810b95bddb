"""`rl-trust tune`: hyperparameter search with Optuna over the same trainer.

    rl-trust tune --agent ppo --env CartPole-v1 --trials 8 --steps 20000
    rl_trust.tune(agent="ppo", env="CartPole-v1", trials=8, steps=20_000)

A study lives in an Optuna RDB storage (`sqlite:///OUT/study.db` by default, or any
SQLAlchemy URL, e.g. PostgreSQL, for workers on many machines). Every trial trains one run
folder per seed under OUT/trials/ (`rl-trust board OUT` shows them with their hparams)
through the Python API's models, reporting the recent episode return after every update to
the pruner. Re-running the same command continues the study: finished trials are never run
again; a trial whose worker died (kill -9, a lost machine) is failed by Optuna's heartbeat
and retried once, and a trial stopped by Ctrl-C / SIGTERM is queued again on the next
start; either way the retry continues its run folders from their own checkpoints. At the
end OUT/best.yaml (an agent preset of the best trial) and OUT/report.md (tables and plots)
are written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rl_trust import config
from rl_trust import tags as T
from rl_trust.errors import Diverged, UserError, one_line

# the distributions of a search-space file, named as rl-baselines3-zoo's samplers name them
# (Optuna's suggest_loguniform / suggest_uniform / suggest_int / suggest_categorical)
KINDS = ("loguniform", "uniform", "int", "categorical")
OPTIONS = {"loguniform": (), "uniform": ("step",), "int": ("step", "log"), "categorical": ()}
# set by `tune` itself, not searched: the budget, the seeds and where runs go
NOT_SEARCHED = ("steps", "seed")
PRUNERS = ("median", "halving", "none")
HEARTBEAT_S = 10  # a worker's heartbeat; silent for 2 intervals, its trial is failed

_CHOICES = {
    "gamma": [0.98, 0.99, 0.995, 0.999],
    "gae_lambda": [0.9, 0.95, 0.98],
    "n_steps": [256, 512, 1024, 2048],
    "batch_size": [32, 64, 128, 256],
}


def default_space(cfg: config.RunConfig) -> dict[str, dict]:
    """The built-in search space for the agent `cfg` resolves to: the learning and rollout
    settings every agent has, and the agent's own (agents' `search_space`: PPO's KL target
    and PID gains or clip range as the preset uses them; TRPO's δ, CG damping and steps,
    and critic updates)."""
    from rl_trust.agents import agent_class

    return {
        "learning_rate": {"loguniform": [1e-4, 3e-3]},
        "n_steps": {"categorical": _CHOICES["n_steps"]},
        "batch_size": {"categorical": _CHOICES["batch_size"]},
        "gamma": {"categorical": _CHOICES["gamma"]},
        "gae_lambda": {"categorical": _CHOICES["gae_lambda"]},
        **agent_class(cfg.agent.algo).search_space(cfg.agent),
    }


def _field_type(algo: str, key: str) -> Any:
    for cls in (config.RunSettings, config.EnvConfig, config.AGENT_CLASSES[algo]):
        hints = typing.get_type_hints(cls)
        if key in hints and key in {f.name for f in dataclasses.fields(cls)}:
            return hints[key]
    return None


def _check_value(algo: str, key: str, value: Any, where: str) -> Any:
    """`value` as the config key takes it, or a UserError naming where it came from."""
    try:
        value = config.coerce(key, value, _field_type(algo, key))
        config._check(key, value)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return value


def _takes(tp: Any, kind: type) -> bool:
    return tp is kind or kind in typing.get_args(tp)


def check_space(space: Any, algo: str, where: str) -> dict[str, dict]:
    """A search space (key → {kind: args, options}) checked against the agent's config keys
    and the values each key takes; returns it in canonical form."""
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}: expected a mapping of config keys to distributions")
    out = {}
    for key, dist in space.items():
        if key in NOT_SEARCHED:
            raise UserError(f"{where}: {key} is not searched: tune sets it (--{key}s / --steps)")
        if key not in config.all_keys(algo):
            raise config._unknown(str(key), algo, where)
        out[key] = _check_distribution(algo, key, dist, f"{where}: {key}")
    return out


def _check_distribution(algo: str, key: str, dist: Any, at: str) -> dict:
    """One key's distribution checked (its kind, options and bounds against the values the
    key takes), in canonical form; a UserError starting with `at` otherwise."""
    kinds = [k for k in KINDS if isinstance(dist, dict) and k in dist]
    if len(kinds) != 1:
        raise UserError(
            f"{at}: {dist!r} is not a distribution: give one of "
            + ", ".join(f"{{{k}: ...}}" for k in KINDS)
        )
    kind = kinds[0]
    extra = set(dist) - {kind, *OPTIONS[kind]}
    if extra:
        allowed = ", ".join(OPTIONS[kind]) or "none"
        raise UserError(
            f"{at}: {kind} takes no {', '.join(sorted(map(str, extra)))} (options: {allowed})"
        )
    args, tp = dist[kind], _field_type(algo, key)
    if kind == "categorical":
        if not isinstance(args, list) or not args:
            raise UserError(f"{at}: categorical takes a non-empty list of choices")
        for choice in args:
            _check_value(algo, key, choice, at)
        return {"categorical": list(args)}
    if not (isinstance(args, list) and len(args) == 2):
        raise UserError(f"{at}: {kind} takes [low, high]")
    number = int if kind == "int" else float
    if kind != "int" and not _takes(tp, float):
        raise UserError(
            f"{at}: {key} takes {config._type_name(tp)}, not a float {kind}: use int or categorical"
        )
    if kind == "int" and not _takes(tp, int):
        raise UserError(f"{at}: {key} takes {config._type_name(tp)}, not an int")
    low, high = (_check_value(algo, key, v, at) for v in args)
    if kind == "int" and not all(isinstance(v, int) for v in args):
        raise UserError(f"{at}: int takes integer bounds, not {args}")
    low, high = number(low), number(high)
    if not low < high:
        raise UserError(f"{at}: {kind} needs low < high, not {args}")
    if (kind == "loguniform" or dist.get("log")) and low <= 0:
        raise UserError(f"{at}: {kind} on a log scale needs low > 0, not {low}")
    canon = {kind: [low, high]}
    if "log" in dist:
        if not isinstance(dist["log"], bool):
            raise UserError(f"{at}: log takes true or false")
        canon["log"] = dist["log"]
    if "step" in dist:
        step = dist["step"]
        if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
            raise UserError(f"{at}: step takes a number > 0")
        if kind == "int" and (not isinstance(step, int) or dist.get("log")):
            raise UserError(f"{at}: an int's step is an integer, without log")
        canon["step"] = number(step)
    return canon


def read_space(path: str | Path, algo: str) -> dict[str, dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--space {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"--space {path}: not valid YAML ({e.__class__.__name__})") from None
    return check_space(data, algo, str(path))


def _suggest(trial, key: str, dist: dict) -> Any:
    """The trial's value for `key` (a list choice, e.g. net_arch, travels as its YAML)."""
    if "categorical" in dist:
        choices = dist["categorical"]
        if any(isinstance(c, list | dict) for c in choices):
            text = [yaml.safe_dump(c, default_flow_style=True).strip() for c in choices]
            return yaml.safe_load(trial.suggest_categorical(key, text))
        return trial.suggest_categorical(key, choices)
    if "int" in dist:
        low, high = dist["int"]
        return trial.suggest_int(
            key, low, high, step=dist.get("step", 1), log=dist.get("log", False)
        )
    if "uniform" in dist:
        low, high = dist["uniform"]
        return trial.suggest_float(key, low, high, step=dist.get("step"))
    low, high = dist["loguniform"]
    return trial.suggest_float(key, low, high, log=True)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything a worker needs (it travels to worker processes as JSON)."""

    agent: str
    env: str
    algo: str
    trials: int
    steps: int
    seeds: int
    space: dict
    overrides: dict
    storage: str
    study: str
    out: str
    pruner: str
    eval_episodes: int | None
    heartbeat: int
    workers: int = 1
    sampler_seed: int | None = None  # a worker's sampler seeds from it plus its index
    worker: int = 0

    def identity(self) -> dict:
        """What a study's trials must share to be one study (stored with it)."""
        keys = ("agent", "env", "steps", "seeds", "space", "overrides", "eval_episodes")
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("rl-trust tune needs Optuna: pip install 'rl-trust[tune]'") from None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def _url(text: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text)
    except ArgumentError:
        raise UserError(
            f"--storage {text!r} is not a SQLAlchemy URL (sqlite:///path/study.db, "
            "postgresql://user@host/db)"
        ) from None


def _storage(spec: Spec):
    optuna = _optuna()
    url = _url(spec.storage)
    engine = {"connect_args": {"timeout": 60}} if url.get_backend_name() == "sqlite" else {}
    try:
        return optuna.storages.RDBStorage(
            spec.storage,
            engine_kwargs=engine,
            heartbeat_interval=spec.heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        )
    except Exception as e:  # a driver missing, a server that refuses, a file that is not a db
        raise UserError(
            f"cannot open the storage {url.render_as_string()}: {one_line(e)}"
        ) from None


def _pruner(spec: Spec):
    optuna = _optuna()
    if spec.pruner == "median":  # (as rl-zoo: no pruning in the first third of a trial)
        startup = min(5, max(1, spec.trials // 4))
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=spec.steps // 3)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, spec.steps // 9), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def _study(spec: Spec, create: bool):
    optuna = _optuna()
    seed = None if spec.sampler_seed is None else spec.sampler_seed + spec.worker
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=min(5, max(2, spec.trials // 3)), multivariate=True, seed=seed
    )
    storage = _storage(spec)
    if not create:
        return optuna.load_study(
            study_name=spec.study, storage=storage, sampler=sampler, pruner=_pruner(spec)
        )
    study = optuna.create_study(
        study_name=spec.study,
        storage=storage,
        sampler=sampler,
        pruner=_pruner(spec),
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("rl_trust")
    if recorded is None:
        study.set_user_attr("rl_trust", spec.identity())
    elif recorded != spec.identity():
        diff = [k for k in spec.identity() if recorded.get(k) != spec.identity()[k]]
        raise UserError(
            f"study {spec.study!r} in {_safe_url(spec.storage)} was made with another "
            f"{', '.join(diff)}: give another --study (or --out), or the same arguments to "
            "continue it"
        )
    return study


# ---- the trials ------------------------------------------------------------------------


class TrialFailed(Exception):
    """A trial that cannot give a value (a config the sampled values make invalid, no
    episode finished); recorded as failed with the reason, the study goes on."""


def _origin(trial) -> int:
    """The trial whose run folders this one trains: itself, or the one it retries."""
    attrs = getattr(trial, "system_attrs", None)  # (a FrozenTrial's; a live Trial asks)
    if attrs is None:
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    return int(attrs.get("failed_trial", trial.number))


def run_dir_of(out: Path, origin: int, seed: int) -> Path:
    return Path(out) / "trials" / f"t{origin:04d}-s{seed}"


class RecentReturn:
    """A trial's return now: the mean return of the episodes that ended in the last `window`
    env steps (at least the last episode; at most the 100 the collector keeps). Not
    rollout/ep_rew_mean, whose 100 episodes span most of a short trial: on CartPole 100
    episodes of up to 200 steps are 20k steps, so that every trial that learns at all ends a
    20k-step study level near 200, and the study cannot tell them apart."""

    def __init__(self, window: int):
        self.window, self.marks, self.value = window, [], None  # marks: (step, episodes)

    def __call__(self, step: int, collector) -> float | None:
        self.marks.append((step, collector.episodes))
        before = [n for s, n in self.marks if s <= step - self.window]
        returns = list(collector.episode_returns)
        if returns:
            recent = collector.episodes - (before[-1] if before else 0)
            self.value = float(np.mean(returns[-min(max(recent, 1), len(returns)) :]))
        return self.value


def _model_of(spec: Spec, trial, values: dict, seed: int, run_dir: Path):
    """The seed's model: continued from its newest checkpoint, or new."""
    from rl_trust import api, checkpoint

    try:
        found = (run_dir / "config.yaml").is_file() and checkpoint.newest(run_dir)
    except UserError:
        found = None
    if found:
        model = api.load(run_dir)
        trial.set_user_attr(f"resumed_s{seed}", model.num_timesteps)
        return model
    shutil.rmtree(run_dir, ignore_errors=True)  # (killed before its first checkpoint)
    return api.model_class(spec.algo)(
        spec.env, preset=spec.agent, seed=seed, run_dir=run_dir, **values
    )


def _run_seed(spec: Spec, trial, values: dict, seed: int, index: int) -> float:
    """Train (or continue) one seed's run of the trial; its final return (or evaluation)."""
    import optuna

    from rl_trust.evaluate import evaluate

    run_dir = run_dir_of(Path(spec.out), _origin(trial), seed)
    summary_path, value_path = run_dir / "summary.json", run_dir / "tune_value.json"
    model = None
    if summary_path.exists() and json.loads(summary_path.read_text())["steps"] >= spec.steps:
        summary = json.loads(summary_path.read_text())  # this seed finished before a kill
        final = summary["final"].get(T.ROLLOUT_EP_REW_MEAN)
        if value_path.exists():
            final = json.loads(value_path.read_text())["recent_return"]
    else:
        model = _model_of(spec, trial, values, seed, run_dir)
        offset, pruned = index * spec.steps, []
        recent = RecentReturn(max(1, spec.steps // 10))

        def report(metrics: dict, trainer) -> bool | None:
            value = recent(trainer.learner.step, trainer.learner.collector)
            if value is None:
                return None
            step = offset + trainer.learner.step
            trial.report(value, step)
            if trial.should_prune():
                pruned.append((step, value))
                return False
            return None

        try:
            model.learn(spec.steps - model.num_timesteps, callback=report)
            final = recent.value
        finally:
            model.close()
        if pruned:
            step, value = pruned[0]
            raise optuna.TrialPruned(f"seed {seed} at step {step}: return {value:.1f}")
        if final is not None:
            value_path.write_text(json.dumps({"recent_return": final}))
    if spec.eval_episodes:
        path = run_dir / "eval.json"
        done = json.loads(path.read_text()) if path.exists() and model is None else None
        if done is None or done.get("episodes") != spec.eval_episodes:
            done = evaluate(run_dir, "latest", spec.eval_episodes, deterministic=True)
        return float(done["mean_return"])
    if final is None:
        raise TrialFailed(f"seed {seed}: no episode finished in {spec.steps} steps")
    return float(final)


def objective(spec: Spec, trial) -> float:
    optuna = _optuna()
    if _surplus(spec, trial):
        trial.storage.set_trial_system_attr(trial._trial_id, "surplus", True)
        raise TrialFailed("surplus: the study has its trials")
    try:
        values = {**spec.overrides}
        for key, dist in spec.space.items():
            values[key] = _suggest(trial, key, dist)
        origin = _origin(trial)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("runs", [run_dir_of(Path(), origin, s).name for s in range(spec.seeds)])
        try:
            config.load(spec.agent, spec.env, values, spec.steps, 0)
        except UserError as e:
            raise TrialFailed(f"invalid config: {e}") from None
        returns = [_run_seed(spec, trial, values, seed, seed) for seed in range(spec.seeds)]
        trial.set_user_attr("seed_values", returns)
        return sum(returns) / len(returns)
    except KeyboardInterrupt:  # (checkpointed by the model; queued again on the next start)
        trial.set_user_attr("interrupted", True)
        raise
    except Diverged as e:
        trial.set_user_attr("fail_reason", f"diverged: {e}")
        raise
    except (TrialFailed, UserError) as e:
        trial.set_user_attr("fail_reason", str(e))
        raise
    except optuna.TrialPruned:
        raise
    except Exception as e:
        trial.set_user_attr("fail_reason", one_line(e))
        raise


# ---- counting, retrying, progress ------------------------------------------------------


def _superseded(trials) -> set[int]:
    """Trials that a later trial retries (their own state no longer counts)."""
    out = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
        if "resumes" in t.system_attrs:
            out.add(t.system_attrs["resumes"])
    return out


def _counted(trials) -> list:
    """The study's trials that count towards --trials: not retried by a later one, nor a
    surplus trial (two workers that both saw one trial missing start one each)."""
    gone = _superseded(trials)
    return [t for t in trials if t.number not in gone and not t.system_attrs.get("surplus")]


def _surplus(spec: Spec, trial) -> bool:
    """Whether this new trial is beyond the first `trials` that count (by number); a retry
    never is (it replaces the trial it retries)."""
    counted = _counted(trial.study.get_trials(deepcopy=False))
    numbers = sorted(t.number for t in counted)
    return trial.number in numbers[spec.trials :]


def requeue_interrupted(study) -> int:
    """Queue again every trial stopped by Ctrl-C / SIGTERM (failed, `interrupted`) that no
    trial retries yet; the copy trains on in the same run folders. Returns how many."""
    optuna = _optuna()
    trials = study.get_trials(deepcopy=False)
    gone, n = _superseded(trials), 0
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted"):
            if t.number in gone:
                continue
            user = {k: v for k, v in t.user_attrs.items() if k != "interrupted"}
            system = {**t.system_attrs, "failed_trial": _origin(t), "resumes": t.number}
            study.add_trial(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.WAITING,
                    params=t.params,
                    distributions=t.distributions,
                    user_attrs=user,
                    system_attrs=system,
                )
            )
            n += 1
    return n


def _clock(s: float) -> str:
    return "?" if math.isnan(s) else f"{int(s) // 3600}:{int(s) % 3600 // 60:02d}:{int(s) % 60:02d}"


def progress_line(study, trial, spec: Spec) -> str:
    """One line for a finished trial: number, state, value, best so far, done / total, ETA."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    trials = _counted(study.get_trials(deepcopy=False))
    finished = [t for t in trials if t.state.is_finished()]
    complete = [t for t in trials if t.state == states.COMPLETE]
    if trial.state == states.COMPLETE:
        what = f"return {trial.value:.1f}"
    elif trial.state == states.PRUNED:
        last = max(trial.intermediate_values, default=None)
        what = f"at step {last}" if last is None else f"at step {last:,}"
    else:
        what = trial.user_attrs.get("fail_reason") or (
            "interrupted" if trial.user_attrs.get("interrupted") else "worker lost"
        )
    best = max(complete, key=lambda t: t.value, default=None)
    best_text = "none yet" if best is None else f"{best.value:.1f} (trial {best.number})"
    took = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in finished
        if t.datetime_complete and t.datetime_start
    ]
    left = max(0, spec.trials - len(finished))
    eta = sum(took) / len(took) * left / spec.workers if took else math.nan
    retry = f" (retry of {_origin(trial)})" if _origin(trial) != trial.number else ""
    return (
        f"trial {trial.number}{retry} {trial.state.name.lower()}: {what} | best {best_text} | "
        f"{len(finished)}/{spec.trials} done | ETA {_clock(eta)}"
    )


def work(spec: Spec, note: Callable[[str], None] | None = None) -> None:
    """One worker: run trials until the study has `trials` of them (retries do not count
    twice) and none is running or queued; waits for other workers' running trials, so that
    one whose worker died is failed by its heartbeat and retried here."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    study = _study(spec, create=False)

    def tell(study, trial):
        if note is not None and not trial.system_attrs.get("surplus"):
            note(progress_line(study, trial, spec))

    catch = (Exception,)  # a failed trial is recorded with its reason; the study goes on
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = _counted(study.get_trials(deepcopy=False))
        waiting = any(t.state == states.WAITING for t in trials)
        if len(trials) < spec.trials or waiting:
            study.optimize(lambda t: objective(spec, t), n_trials=1, catch=catch, callbacks=[tell])
        elif any(t.state == states.RUNNING for t in trials):
            time.sleep(1.0)  # (until they finish, or one goes stale and is retried here)
        else:
            return


# ---- the command -----------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """What `tune` returns: the study and where its outputs are."""

    study: Any
    best_value: float | None
    best_params: dict
    best_yaml: Path | None
    report: Path
    counts: dict[str, int]


def _worker_process(spec: Spec, log: Path) -> int:
    from rl_trust.benchmark import matrix

    cmd = [sys.executable, "-m", "rl_trust.tune", json.dumps(dataclasses.asdict(spec))]
    status, _ = matrix._run_child(cmd, log)
    return status


def tune(
    agent: str = "ppo",
    env: str = "CartPole-v1",
    trials: int = 20,
    steps: int | None = None,
    seeds: int = 1,
    space: str | Path | dict | None = None,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    pruner: str = "median",
    out: str | Path | None = None,
    eval_episodes: int | None = None,
    overrides: dict | None = None,
    heartbeat: int = HEARTBEAT_S,
    sampler_seed: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    progress: Callable[[str], None] | None = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> Result:
    """Search `agent`'s hyperparameters on `env` with Optuna (see the module's docstring).
    `space`: a search-space YAML file, or the mapping itself (None: the built-in space);
    `overrides`: fixed config values (as `--set`); `steps`: per trial and seed (default: the
    env preset's); `storage`: a SQLAlchemy URL (default sqlite:///OUT/study.db)."""
    if backend not in ("local", "ray"):
        raise UserError(f"--backend {backend!r}: choose local or ray")
    given = {k: v for k, v in locals().items() if k not in ("progress", "backend", "ray_address")}
    spec = make_spec(**given)
    out = Path(spec.out)
    say = progress or (lambda _: None)
    url = _url(spec.storage)
    try:  # (a SQLite file's folder first; any other storage is opened before OUT is made)
        if url.get_backend_name() == "sqlite" and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        study_obj = _study(spec, create=True)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create it: {e.strerror or e}") from None
    requeued = requeue_interrupted(study_obj)
    trials_now = _counted(study_obj.get_trials(deepcopy=False))
    done = sum(t.state.is_finished() for t in trials_now)
    say(
        f"study {spec.study} in {_safe_url(spec.storage)}: {done} of {spec.trials} trials "
        f"finished before"
        + (f", {requeued} interrupted queued again" if requeued else "")
        + f"; {workers} worker(s), {spec.steps:,} steps x {spec.seeds} seed(s) per trial"
    )
    if backend == "ray":
        _ray_workers(spec, study_obj, say, ray_address)
    elif workers == 1:
        work(spec, say)
    else:
        _local_workers(spec, study_obj, say)
    return finish(spec, say)


def _watch(spec: Spec, study, say: Callable[[str], None], running: Callable[[], bool]) -> None:
    """Print a line for every trial that finishes (a worker's here, or another machine's)
    until `running()` turns false."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def report_new() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                if not t.system_attrs.get("surplus"):
                    say(progress_line(study, t, spec))

    while running():
        report_new()
    report_new()


def _local_workers(spec: Spec, study, say: Callable[[str], None]) -> None:
    """`workers` processes on this machine (the benchmark's trial processes: stopped with
    SIGTERM, so that their trials checkpoint, on Ctrl-C), sharing the storage."""
    from rl_trust.benchmark import matrix

    logs = Path(spec.out) / "workers"
    logs.mkdir(exist_ok=True)
    matrix._stopping.clear()
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: statuses.append(
                _worker_process(dataclasses.replace(spec, worker=i), logs / f"worker{i}.log")
            ),
            daemon=True,
        )
        for i in range(spec.workers)
    ]

    def running() -> bool:
        time.sleep(1.0)
        return any(th.is_alive() for th in threads)

    try:
        for th in threads:
            th.start()
        _watch(spec, study, say, running)
    except BaseException:
        matrix.stop_children()
        raise
    bad = [s for s in statuses if s != 0]
    if bad:
        raise UserError(
            f"{len(bad)} of {spec.workers} workers failed (exit {bad[0]}): see {logs}/worker*.log"
        )


def _ray_work(spec: dict) -> int:
    """A Ray task: one worker (its trials' run folders under the same OUT path, so a
    cluster needs a shared filesystem there, and a storage every node reaches)."""
    work(Spec(**spec))
    return 0


def _ray_workers(spec: Spec, study, say: Callable[[str], None], address: str | None) -> None:
    """`workers` Ray tasks of one CPU each, on the cluster at `address` or one started here."""
    from rl_trust.benchmark import matrix

    with matrix.ray_session(address, spec.workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_work)
        pending = [
            task.remote(dataclasses.asdict(dataclasses.replace(spec, worker=i)))
            for i in range(spec.workers)
        ]

        def running() -> bool:
            nonlocal pending
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for ref in done:
                ray.get(ref)  # (a worker's exception, raised here)
            return bool(pending)

        try:
            _watch(spec, study, say, running)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise


def _safe_url(url: str) -> str:
    return _url(url).render_as_string(hide_password=True)


def _check_counts(trials, seeds, workers, heartbeat, eval_episodes, sampler_seed) -> None:
    """The integer arguments in their ranges, or a UserError naming the first that is not."""
    for name, value, low, high in (
        ("trials", trials, 1, 10**6),
        ("seeds", seeds, 1, 1000),
        ("workers", workers, 1, 1024),
        ("heartbeat", heartbeat, 1, 3600),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(f"--{name} {value!r} must be an integer in {low}..{high}")
    if eval_episodes is not None and (
        isinstance(eval_episodes, bool)
        or not isinstance(eval_episodes, int)
        or not 1 <= eval_episodes <= 10**6
    ):
        raise UserError(f"--eval-episodes {eval_episodes!r} must be an integer in 1..10^6")
    if sampler_seed is not None and (
        isinstance(sampler_seed, bool) or not isinstance(sampler_seed, int) or sampler_seed < 0
    ):
        raise UserError(f"--sampler-seed {sampler_seed!r} must be an integer ≥ 0")


def _space_of(space: dict | str | Path | None, base: config.RunConfig) -> dict[str, dict]:
    """The space given as a mapping or a file, checked; or the built-in one (None)."""
    if isinstance(space, dict):
        return check_space(space, base.agent.algo, "space")
    if space is not None:
        return read_space(space, base.agent.algo)
    return default_space(base)


def _fixed_values(overrides: dict, space: dict, base: config.RunConfig) -> dict:
    """The --set values, none of them searched too, checked, with the trials' checkpoints:
    each trial's runs checkpoint five times, so a retried trial loses at most a fifth."""
    both = sorted(set(space) & set(overrides))
    if both:
        raise UserError(
            f"{', '.join(both)} is both searched (the space) and fixed (--set): "
            "give it in one of them"
        )
    overrides = {"checkpoint_every": max(1, -(-base.run.steps // 5)), **overrides}
    return {k: _check_value(base.agent.algo, k, v, "--set") for k, v in overrides.items()}


def _out_folder(out: str | Path | None, name: str) -> Path:
    """--out, or runs/tune/NAME; not a file."""
    out = Path(out) if out is not None else Path("runs") / "tune" / name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: name a folder")
    return out


def make_spec(
    agent,
    env,
    trials,
    steps,
    seeds,
    space,
    storage,
    study,
    workers,
    pruner,
    out,
    eval_episodes,
    overrides,
    heartbeat,
    sampler_seed,
) -> Spec:
    """Every argument checked (nothing is written before): a UserError names the bad one."""
    _optuna()  # (a missing extra first: its message says what to install)
    _check_counts(trials, seeds, workers, heartbeat, eval_episodes, sampler_seed)
    if pruner not in PRUNERS:
        raise UserError(f"--pruner {pruner!r}: choose one of {', '.join(PRUNERS)}")
    overrides = dict(overrides or {})
    for key in NOT_SEARCHED:
        if key in overrides:
            raise UserError(f"--set {key}: tune sets it (--steps, --seeds)")
    from rl_trust.envs import check_id

    check_id(env)
    base = config.load(agent, env, overrides, steps, 0)
    algo = base.agent.algo
    space = _space_of(space, base)
    overrides = _fixed_values(overrides, space, base)
    stem = Path(agent).stem if str(agent).endswith(config.YAML_SUFFIXES) else agent
    name = f"{stem}-{env.replace('/', '_').replace(':', '_')}"
    out = _out_folder(out, name)
    spec = Spec(
        agent=str(Path(agent).resolve()) if stem != agent else agent,
        env=env,
        algo=algo,
        trials=trials,
        steps=base.run.steps,
        seeds=seeds,
        space=space,
        overrides=json.loads(json.dumps(overrides)),
        storage=storage or f"sqlite:///{out.resolve() / 'study.db'}",
        study=study or name,
        out=str(out.resolve()),
        pruner=pruner,
        eval_episodes=eval_episodes,
        heartbeat=heartbeat,
        workers=workers,
        sampler_seed=sampler_seed,
    )
    _url(spec.storage)
    return spec


# ---- outputs ---------------------------------------------------------------------------


def _decode(spec: Spec, params: dict) -> dict:
    """A trial's params as config values (a list choice travels as its YAML text)."""
    out = {}
    for key, value in params.items():
        choices = spec.space.get(key, {}).get("categorical", [])
        if any(isinstance(c, list | dict) for c in choices) and isinstance(value, str):
            value = yaml.safe_load(value)
        out[key] = value
    return out


def _preset_of(agent: str) -> dict:
    path = Path(agent) if agent.endswith(config.YAML_SUFFIXES) else config.presets("agents")[agent]
    return {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "description"}


def write_best(spec: Spec, trial, path: Path) -> tuple[Path, list[str]]:
    """best.yaml: the agent preset the study started from with the trial's values (and the
    fixed --set values, less the run settings); `rl-trust train --agent best.yaml` takes it.
    Returns it and the --set arguments train needs where the env preset would override a
    value of it (an env preset's keys apply after the agent preset's)."""
    run_keys = {f.name for f in dataclasses.fields(config.RunSettings)}
    values = {k: v for k, v in spec.overrides.items() if k not in run_keys}
    values.update(_decode(spec, trial.params))
    preset = {**_preset_of(spec.agent), **values}
    agent_name = Path(spec.agent).stem
    preset = {
        "description": f"tuned from {agent_name} on {spec.env} by rl-trust tune (study "
        f"{spec.study}, trial {trial.number}: return {trial.value:.1f} over {spec.seeds} "
        f"seed(s) of {spec.steps} steps)",
        **preset,
    }
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(preset, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    wanted = config.load(spec.agent, spec.env, values, spec.steps, 0).flat()
    got = config.load(str(path), spec.env, {}, spec.steps, 0).flat()
    extra = [f"{k}={json.dumps(wanted[k])}" for k in sorted(values) if got[k] != wanted[k]]
    return path, extra


def _figure_of(ax):
    import numpy as np

    first = np.ravel(ax)[0] if isinstance(ax, np.ndarray) else ax
    return first.figure


def _plots(spec: Spec, study, trials, out: Path) -> dict[str, str]:
    """PNGs: Optuna's optimization history and parameter importances, and the return
    against the KL target (PPO's kl_target, TRPO's δ) where the space searches it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    optuna = _optuna()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    made: dict[str, str] = {}

    def save(name: str, draw) -> None:
        try:
            fig = draw()
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            made[name] = name
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            made[name] = f"not drawn: {one_line(e)}"

    if complete:
        save("history.png", lambda: _figure_of(ovm.plot_optimization_history(study)))
    varied = {k for k in spec.space if len({repr(t.params.get(k)) for t in complete}) > 1}
    if len(complete) >= 2 and varied:
        save("importances.png", lambda: _figure_of(ovm.plot_param_importances(study)))
    from rl_trust.agents import agent_class

    key = agent_class(spec.algo).kl_target_key
    if key in spec.space and complete:
        save("return-vs-kl-target.png", lambda: _kl_target_plot(spec, key, complete, trials))
    return made


def _kl_target_plot(spec: Spec, key: str, complete: list, trials: list):
    """The return of each trial against its KL target (pruned ones: when pruned)."""
    import matplotlib.pyplot as plt

    optuna = _optuna()
    fig, ax = plt.subplots()
    pruned = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values and key in t.params
    ]
    ax.scatter(
        [t.params[key] for t in complete],
        [t.value for t in complete],
        label="complete: final return",
    )
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter(
            [t.params[key] for t in pruned],
            last,
            marker="x",
            color="grey",
            label="pruned: return when pruned",
        )
    if "loguniform" in spec.space[key] or spec.space[key].get("log"):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel("mean episode return")
    ax.set_title(f"{spec.env}: return against the KL target")
    ax.legend()
    return fig


def write_outputs(spec: Spec, study, say: Callable[[str], None]) -> Result:
    """best.yaml and report.md (with its plots) in OUT, from the study as it stands."""
    states = _optuna().trial.TrialState
    out = Path(spec.out)
    trials = _counted(study.get_trials(deepcopy=False))
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in states}
    complete = sorted((t for t in trials if t.state == states.COMPLETE), key=lambda t: -t.value)
    best = complete[0] if complete else None
    best_yaml, extra = write_best(spec, best, out / "best.yaml") if best else (None, [])
    command = f"rl-trust train --agent {best_yaml} --env {spec.env}" + "".join(
        f" --set {a}" for a in extra
    )
    plots = _plots(spec, study, trials, out)
    lines = _report_head(spec, counts)
    if best is not None:
        lines += _report_best(spec, complete, command, extra)
    lines += _report_not_complete(trials, states)
    lines += ["## Plots", ""]
    for name, what in plots.items():
        lines.append(f"![{name}]({name})" if what == name else f"- {name}: {what}")
    if not plots:
        lines.append("(none: no trial completed)")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    if best is not None:
        say(f"best: trial {best.number}, return {best.value:.1f}; train it with: {command}")
    else:
        say("no trial completed: no best.yaml")
    return Result(
        study=study,
        best_value=None if best is None else best.value,
        best_params={} if best is None else _decode(spec, best.params),
        best_yaml=best_yaml,
        report=report,
        counts=counts,
    )


def _report_head(spec: Spec, counts: dict[str, int]) -> list[str]:
    objective_text = (
        f"the mean over seeds of a deterministic evaluation ({spec.eval_episodes} episodes)"
        if spec.eval_episodes
        else "the mean over seeds of the final return (the mean return of the episodes that "
        "ended in the trial's last 10% of steps)"
    )
    return [
        f"# Tuning {Path(spec.agent).stem} on {spec.env}",
        "",
        f"Study `{spec.study}` in `{_safe_url(spec.storage)}`: {spec.trials} trials of "
        f"{spec.steps:,} steps x {spec.seeds} seed(s), pruner {spec.pruner}; objective: "
        f"{objective_text}. "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + ". Every trial's runs are under `trials/` (`rl-trust board` on this folder shows "
        "them with their hparams).",
        "",
    ]


def _report_best(spec: Spec, complete: list, command: str, extra: list[str]) -> list[str]:
    """The best trial's train command and the ten best trials' values."""
    best = complete[0]
    lines = ["## Best", "", f"Trial {best.number}: {best.value:.2f}. Train it:", ""]
    lines += [f"    {command}", ""]
    if extra:
        names = ", ".join(a.split("=")[0] for a in extra)
        lines += [
            f"(The env preset of {spec.env} sets {names} after the agent preset: "
            "the --set keeps the tuned value.)",
            "",
        ]
    keys = list(spec.space)
    lines += [
        "| trial | return | " + " | ".join(keys) + " | runs |",
        "|---|---|" + "---|" * len(keys) + "---|",
    ]
    for t in complete[:10]:
        params = _decode(spec, t.params)
        cells = [_cell(params.get(k)) for k in keys]
        runs = ", ".join(f"`trials/{r}`" for r in t.user_attrs.get("runs", []))
        lines.append(f"| {t.number} | {t.value:.2f} | " + " | ".join(cells) + f" | {runs} |")
    return [*lines, ""]


def _report_not_complete(trials: list, states) -> list[str]:
    """The pruned trials (where) and the failed ones (why)."""
    lines = []
    pruned = [t for t in trials if t.state == states.PRUNED]
    if pruned:
        lines += ["## Pruned", ""]
        for t in pruned:
            last = max(t.intermediate_values, default=None)
            at = (
                ""
                if last is None
                else f" at step {last:,} (return {t.intermediate_values[last]:.1f})"
            )
            lines.append(f"- trial {t.number}{at}")
        lines.append("")
    failed = [t for t in trials if t.state == states.FAIL]
    if failed:
        lines += ["## Failed", ""]
        for t in failed:
            why = t.user_attrs.get("fail_reason") or (
                "interrupted" if t.user_attrs.get("interrupted") else "its worker was lost"
            )
            lines.append(f"- trial {t.number}: {why}")
        lines.append("")
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def finish(spec: Spec, say: Callable[[str], None]) -> Result:
    return write_outputs(spec, _study(spec, create=False), say)


def _main(argv: list[str]) -> int:
    """A worker process (`python -m rl_trust.tune SPEC_JSON`), started by `tune`."""
    spec = Spec(**json.loads(argv[0]))

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    try:
        work(spec, lambda msg: print(msg, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        return 143
    return 0


class _CallableModule(types.ModuleType):
    """`rl_trust.tune(...)` calls `tune` although `rl_trust.tune` is this module."""

    def __call__(self, *args, **kwargs) -> Result:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
