"""One run folder, for both doors: the `rl-trust` command and the Python API.

A run folder holds config.yaml, TensorBoard events, checkpoints/ and summary.json. This
module owns what keeps it safe, so that the CLI and the API cannot drift apart:

- a new run never adopts an existing folder (`RunFolder.create` claims a new or empty one);
- one writer at a time (`lock`, an flock on RUN/.lock);
- continuing from a chosen checkpoint moves the later ones to RUN/superseded/
  (`continue_from`), so that rotation and "newest" never mix two trajectories;
- config.yaml is written to a temporary file and renamed (checkpoint.write_atomic, as the
  trainer writes summary.json);
- a run's config is data: the modules it names (a `module:Env` id, wrappers, a
  `policy=module:factory`) are imported only with the user's consent (`check_trust`).

Messages name the door's own words (`Words`): `--run-dir` on the command line, `run_dir=`
in Python.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from rl_trust import checkpoint, config
from rl_trust.config import RunConfig
from rl_trust.envs.wrappers import wrapper_entries
from rl_trust.errors import UserError, UserTypeError, one_line


@dataclass(frozen=True)
class Words:
    """How each door names the knobs a message points to."""

    run_dir: str
    checkpoint: str  # a format string with {step}
    allow_import: str
    steps: str  # a format string with {done}
    env: str  # how to give the env a run was trained on


CLI = Words(
    run_dir="choose another --run-dir",
    checkpoint="use --checkpoint {step}",
    allow_import="pass --allow-import if you trust this run",
    steps="pass --steps larger than {done}",
    env="pass --env module:Class (an Env class or a zero-argument factory) with --allow-import",
)
API = Words(
    run_dir="choose another run_dir= (or run_dir=False for none)",
    checkpoint="load {run}/checkpoints/step_{step:012d} instead",
    allow_import="pass allow_import=True if you trust this run",
    steps="learn more than {done} steps",
    env="pass env= (an id, an Env instance or a zero-argument callable)",
)


# ---------------------------------------------------------------- the import-trust check


def imports_named(cfg: RunConfig) -> list[tuple[str, str, str]]:
    """(what, value, module) for each module the config would import: a `module:Env` id,
    each wrapper's module, a `policy=module:factory`."""
    out = []
    module, sep, _ = cfg.env.env_id.rpartition(":")
    if sep:
        out.append(("env", cfg.env.env_id, module))
    for path, _ in wrapper_entries(cfg.env.wrappers):
        out.append(("wrapper", path, path.rpartition(".")[0]))
    if cfg.agent.policy is not None:
        out.append(("policy", cfg.agent.policy, cfg.agent.policy.partition(":")[0]))
    return out


def check_trust(cfg: RunConfig, source: str, allow: bool, words: Words = CLI) -> None:
    """A run folder's config is data: a module it names is imported (its code run) only when
    already loaded or when the user allows it."""
    if allow:
        return
    for what, value, module in imports_named(cfg):
        if module not in sys.modules:
            raise UserError(
                f"{source} names {what} {value!r}: importing module {module!r} runs its code; "
                f"{words.allow_import}"
            )


# ---------------------------------------------------------------- the env's first output


def check_observation(space, obs, what: str) -> None:
    """A UserError unless `obs` has the shape (and, for discrete parts, the range) that
    `space` declares: what would otherwise fail deep inside numpy or torch."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            raise UserError(
                f"{what} is {got}: the observation space is a Dict of {sorted(space.spaces)}"
            )
        for key, part in space.spaces.items():
            check_observation(part, obs[key], f"{what}[{key!r}]")
        return
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(obs, tuple | list) or len(obs) != len(space.spaces):
            raise UserError(
                f"{what} is {_brief(obs)}: the observation space is a Tuple of "
                f"{len(space.spaces)} parts"
            )
        for i, part in enumerate(space.spaces):
            check_observation(part, obs[i], f"{what}[{i}]")
        return
    try:
        x = np.asarray(obs)
    except Exception:  # an object numpy cannot take
        raise UserError(f"{what} is {_brief(obs)}: expected {space}") from None
    if isinstance(space, gym.spaces.Discrete):
        integral = np.issubdtype(x.dtype, np.integer) or (
            np.issubdtype(x.dtype, np.floating) and x.shape == () and float(x).is_integer()
        )
        if x.shape != () or not integral:
            raise UserError(f"{what} is {_brief(obs)}: expected an integer of {space}")
        if not space.start <= int(x) < space.start + space.n:
            raise UserError(
                f"{what} is {int(x)}: expected an integer in "
                f"{space.start}..{space.start + space.n - 1} ({space})"
            )
        return
    if x.shape != tuple(space.shape or ()):
        raise UserError(
            f"{what} has shape {x.shape}: the observation space {space} says {tuple(space.shape)}"
        )
    if isinstance(space, gym.spaces.MultiDiscrete) and not space.contains(
        x.astype(space.dtype, copy=False)
    ):
        raise UserError(f"{what} is {x.tolist()}: outside {space}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{what} holds {x.dtype} values: expected numbers ({space})")


def check_observation_batch(space, obs, what: str) -> None:
    """As check_observation, for each of a batch (the discrete parts' range only)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        x = np.asarray(obs)
        if x.ndim == 1 and np.issubdtype(x.dtype, np.integer):
            bad = x[(x < space.start) | (x >= space.start + space.n)]
            if bad.size:
                last = space.start + space.n - 1
                raise UserError(
                    f"{what} holds {int(bad[0])}: expected integers in "
                    f"{space.start}..{last} ({space})"
                )
            return
    if isinstance(space, gym.spaces.Dict) and isinstance(obs, dict):
        for key, part in space.spaces.items():
            if key in obs:
                check_observation_batch(part, obs[key], f"{what}[{key!r}]")
    if isinstance(space, gym.spaces.Tuple) and isinstance(obs, tuple | list):
        for i, part in enumerate(space.spaces):
            if i < len(obs):
                check_observation_batch(part, obs[i], f"{what}[{i}]")


def _brief(x) -> str:
    text = repr(x)
    return f"{type(x).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def check_trainable(obs_space, act_space, cfg: RunConfig, name: str) -> None:
    """A UserError unless rl-trust trains on these spaces with this config (the network of
    your own, the device, an image encoder's input size)."""
    import gymnasium as gym

    from rl_trust import agents
    from rl_trust.nets.families import family_for
    from rl_trust.nets.observations import layout_for

    for kind, space in (("observation_space", obs_space), ("action_space", act_space)):
        if not isinstance(space, gym.spaces.Space):
            raise UserError(
                f"env {name} has no {kind} (a gymnasium.spaces.Space): it has {_brief(space)}"
            )
    layout = layout_for(obs_space)
    family_for(act_space)
    a = cfg.agent
    if a.policy is not None or a.device == "cuda" or not layout.is_vector:
        agents.build(a, obs_space, act_space, cfg.run.seed)


def _random_action(env, info, cfg: RunConfig, name: str):
    """A random action of the env's space; one its first mask allows where the run masks."""
    from rl_trust.envs import masks
    from rl_trust.nets.families import family_for

    family = family_for(env.action_space)
    source = masks.for_env(env, info, cfg.env.action_masking, family, name)
    if source is None:
        return env.action_space.sample()
    mask = source.read(info)
    rng = np.random.default_rng(cfg.run.seed)
    return family.to_env(family.sample_numpy(np.zeros((1, family.n_params)), rng, mask))[0]


def probe(env, cfg: RunConfig, name: str) -> None:
    """What must hold of an env before a run is built on it: a gymnasium.Env whose spaces
    rl-trust supports, and whose first observations (of reset and of one step with a random
    action) fit its observation space; where the run uses invalid-action masks, a first mask
    that passes their check, and the random action one it allows. The env is reset again
    before training."""
    import gymnasium as gym

    if not isinstance(env, gym.Env):
        raise UserTypeError(
            f"env {name} is {_brief(env)}, not a gymnasium.Env: give a registered id, a "
            "gymnasium.Env, a zero-argument callable returning one, or a "
            "gymnasium.vector.VectorEnv"
        )
    check_trainable(
        getattr(env, "observation_space", None), getattr(env, "action_space", None), cfg, name
    )
    try:
        out = env.reset(seed=cfg.run.seed)
    except UserError:
        raise
    except Exception as e:  # the env's own code
        raise UserError(f"env {name}: reset() raised {one_line(e)}") from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise UserError(f"env {name}: reset() returned {_brief(out)}, not (observation, info)")
    check_observation(env.observation_space, out[0], f"env {name}: reset()'s observation")
    env.action_space.seed(cfg.run.seed)
    action = _random_action(env, out[1], cfg, name)
    try:
        out = env.step(action)
    except UserError:
        raise
    except Exception as e:  # the env's own code
        raise UserError(f"env {name}: step() raised {one_line(e)}") from None
    if not (isinstance(out, tuple) and len(out) == 5):
        raise UserError(
            f"env {name}: step() returned {_brief(out)}, not (observation, reward, "
            "terminated, truncated, info)"
        )
    check_observation(env.observation_space, out[0], f"env {name}: step()'s observation")
    if not isinstance(out[1], int | float | np.integer | np.floating) and np.ndim(out[1]) != 0:
        raise UserError(f"env {name}: step()'s reward is {_brief(out[1])}, not a number")


# ---------------------------------------------------------------- the folder


def new_run_dir(cfg: RunConfig, runs_root: Path) -> Path:
    """runs/<agent>-<env>-s<seed>-<time>/, never an existing folder."""
    env = cfg.env.env_id.replace("/", "_").replace(":", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{cfg.agent_name}-{env}-s{cfg.run.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def check_new(path: Path, words: Words = CLI) -> None:
    """A UserError unless `path` is a folder a new run may claim (absent, or empty); writes
    nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"run folder {path} exists and is not a folder: {words.run_dir}")
    if path.is_dir() and any(path.iterdir()):
        what = "holds a run" if (path / "config.yaml").exists() else "is not empty"
        raise UserError(
            f"run folder {path} already exists and {what}: a new run never adopts one; "
            f"{words.run_dir}"
        )


def claim(path: Path, words: Words = CLI) -> Path:
    """Create the folder of a new run (absent or empty before), or a UserError."""
    path = Path(path)
    check_new(path, words)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_file = path / ".write-test"
        probe_file.touch()
        probe_file.unlink()
    except OSError as e:
        raise UserError(f"cannot create the run folder {path}: {e.strerror or e}") from None
    return path


class RunLock:
    """One writer per run folder: an exclusive flock on RUN/.lock, held while training."""

    def __init__(self, run_dir: Path):
        path = Path(run_dir) / ".lock"
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise UserError(f"cannot open the lock file {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(f"run {run_dir} is in use by pid {pid}: wait for it to end") from None
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only the pid is not shown

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """A run folder: `create` claims a new one, `open` an existing one."""

    def __init__(self, path: Path, words: Words = CLI):
        self.path, self.words = Path(path), words

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(
        cls,
        cfg: RunConfig,
        path: Path | None = None,
        runs_root: Path = Path("runs"),
        words: Words = CLI,
    ) -> RunFolder:
        """Claim a new (absent or empty) folder, `runs_root/<name>` when no path is given,
        and write the resolved config.yaml into it."""
        if path is None and Path(runs_root).exists() and not Path(runs_root).is_dir():
            raise UserError(f"runs root {runs_root} is not a folder")
        path = claim(path or new_run_dir(cfg, runs_root), words)
        try:
            (path / "config.yaml").write_text(cfg.to_yaml())
        except OSError as e:
            shutil.rmtree(path, ignore_errors=True)
            raise UserError(f"cannot write {path}/config.yaml: {e.strerror or e}") from None
        return cls(path, words)

    @classmethod
    def open(cls, path: Path, words: Words = CLI) -> RunFolder:
        if not Path(path).is_dir():
            raise UserError(f"{path} is not an rl-trust run folder (no such folder)")
        return cls(path, words)

    def config(self) -> RunConfig:
        return config.read_run(self.path)

    def check_trust(self, cfg: RunConfig, allow: bool) -> None:
        check_trust(cfg, f"{self.path}/config.yaml", allow, self.words)

    def lock(self) -> RunLock:
        return RunLock(self.path)

    def checkpoint(self, which: int | str | None = None) -> tuple[Path, dict]:
        """The verified checkpoint to start from: the newest, the one at step `which`, or
        "best"."""
        if which == checkpoint.BEST:
            best = self.path / "checkpoints" / checkpoint.BEST
            if best.is_symlink() or not (best / checkpoint.STATE).is_file():
                raise UserError(f"{self.path} has no best checkpoint")
            return best, checkpoint.load(best)
        return checkpoint.newest(self.path, which, self._use_instead)

    def _use_instead(self, step: int) -> str:
        return self.words.checkpoint.format(step=step, run=self.path)

    def resume_point(self, cfg: RunConfig, which: int | None) -> tuple[Path, dict]:
        """The verified state `resume` continues from, with room left under cfg's steps."""
        path, state = self.checkpoint(which)
        done, total = int(state["step"]), cfg.run.steps
        if done >= total:
            raise UserError(
                f"{self.path} already has {done} of {total} steps: "
                f"{self.words.steps.format(done=done)}"
            )
        return path, state

    def continue_from(self, step: int, cfg: RunConfig, quiet: bool = False) -> None:
        """Continue the run from the state at `step` (loaded and verified): checkpoints later
        than it move to RUN/superseded/<time>/, so that rotation never mixes the two
        trajectories, and cfg (its new step total) goes into config.yaml. Hold the lock."""
        later = [p for p in checkpoint.list_checkpoints(self.path) if checkpoint.step_of(p) > step]
        if later:
            aside = self.path / "superseded" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            aside.mkdir(parents=True)
            for p in later:
                os.replace(p, aside / p.name)
            if not quiet:
                print(
                    f"rl-trust: resuming from step_{step:012d}; the later "
                    f"{', '.join(p.name for p in later)} moved to {aside}",
                    file=sys.stderr,
                )
        self.write_config(cfg)

    def write_config(self, cfg: RunConfig) -> None:
        path = self.path / "config.yaml"
        text = cfg.to_yaml()
        if not path.is_file() or path.read_text() != text:
            checkpoint.write_atomic(path, text)

    def resume_hint(self, cfg: RunConfig) -> str:
        """The command that continues this run (with --allow-import when it names modules)."""
        extra = " --allow-import" if imports_named(cfg) else ""
        return f"rl-trust resume {self.path}{extra}"


def with_steps(cfg: RunConfig, steps: int) -> RunConfig:
    if steps == cfg.run.steps:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, steps=steps))
