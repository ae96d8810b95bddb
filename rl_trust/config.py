"""Typed configs, presets and overrides.

A run's config is resolved in layers, each overriding the one before:
dataclass defaults (stable-baselines3's where SB3 has the key) ← agent preset
(agents/<name>.yaml) ← env preset (envs/<id>.yaml: its flat keys, then its `per_algo`
section for the agent's algorithm, its `per_tuning` section for the agent's `tuning`, its
`per_agent` section for the agent itself) ← `--set key=value`. `per_algo.trpo` reaches trpo
and npg alike, `per_tuning.ppo-zoo` ppo-clip-zoo and ppo-zoo, `per_agent.ppo` the agent ppo
only. An agent preset with `tuning: NAME` (e.g. ppo-zoo, rl-baselines3-zoo's per-env PPO
hyperparameters) needs that section in the env preset: an env without it is an error, not a
silent fall-back to defaults. Keys are flat and unique across the run, env and agent sections, so
`--set n_steps=1024` needs no prefix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from rl_trust.errors import UserError, UserTypeError


def _preset_root() -> Path:
    """Where the presets are: RL_TRUST_PRESETS, else those a wheel installs with the package
    (rl_trust/presets/, mapped from the top-level agents/ and envs/ at build time), else the
    source checkout's top-level agents/ and envs/."""
    if os.environ.get("RL_TRUST_PRESETS"):
        return Path(os.environ["RL_TRUST_PRESETS"])
    here = Path(__file__).resolve().parent
    return here / "presets" if (here / "presets" / "agents").is_dir() else here.parent


PRESET_ROOT = _preset_root()
YAML_SUFFIXES = (".yaml", ".yml")


# Every field has a one-line description: the string literal under it (as CleanRL's Args),
# which `rl-trust config --explain` prints (describe(), below).


@dataclass(frozen=True)
class EnvConfig:
    env_id: str = "CartPole-v1"
    """a gymnasium id, or module:Env to import the module that registers it"""
    n_envs: int = 1
    """envs stepped side by side; a rollout is n_steps of each"""
    vectorization: Literal["sync", "async", "envpool"] = "sync"
    """sync: one process; async: a process per env (AsyncVectorEnv); envpool: C++ threads"""
    overlap: bool = False
    """async / envpool, even n_envs: half the envs step while the policy acts on the rest"""
    normalize_obs: bool = False
    """normalize vector observations by their running mean and variance (as VecNormalize)"""
    normalize_reward: bool = False
    """divide rewards by the running std of the discounted return (SB3's VecNormalize)"""
    clip_obs: float = 10.0
    """normalized observations are clipped to ±clip_obs"""
    clip_reward: float = 10.0
    """normalized rewards are clipped to ±clip_reward"""
    env_kwargs: dict = field(default_factory=dict)
    """keyword arguments of gymnasium.make"""
    wrappers: list = field(default_factory=list)
    """gymnasium wrappers around each env, innermost first: "module.Class" or {Class: {kwargs}}"""
    action_masking: Literal["auto", "on", "off"] = "auto"
    """invalid-action masks (env.action_masks() or info["action_mask"]); auto: where given"""


@dataclass(frozen=True)
class AgentConfig:
    """What every agent shares. Names and defaults are stable-baselines3's."""

    algo: Literal["ppo", "trpo"] = "ppo"
    """the algorithm (agents/ppo.py or agents/trpo.py)"""
    n_steps: int = 2048
    """steps of each env per rollout (the batch is n_steps·n_envs)"""
    batch_size: int = 64
    """minibatch size (PPO's gradient steps; TRPO's critic)"""
    n_epochs: int = 10
    """passes over the batch per update (PPO)"""
    learning_rate: float = 3e-4
    """Adam's learning rate"""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """linear: the learning rate times the share of training left"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """λ of generalized advantage estimation"""
    normalize_advantage: bool = True
    """advantages to zero mean and unit std (PPO: per minibatch, as SB3)"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss (PPO)"""
    max_grad_norm: float = 0.5
    """the gradient's global norm is clipped to this"""
    net_arch: tuple[int, ...] = (64, 64)
    """hidden layers of the MLPs (after the encoder for images and Dicts)"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the MLPs' activation"""
    log_std_init: float = 0.0
    """initial log standard deviation of a Gaussian policy"""
    ortho_init: bool = True
    """orthogonal initialization as SB3's"""
    kl_direction: Literal["forward", "reverse"] = "forward"
    """the KL the penalty or constraint uses: forward KL(π_old‖π), reverse KL(π‖π_old)"""
    policy: str | None = None
    """package.module:factory, your own network (SB3's extractor contract); null: the built-in"""
    engine: Literal["auto", "manual", "autograd"] = "auto"
    """how the gradient is found; auto: manual for the built-in MLP on vectors, else autograd"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """the autograd engine's device; auto: cuda where torch sees one (the manual engine: CPU)"""
    precision: Literal["float32", "bfloat16"] = "float32"
    """the autograd engine's arithmetic; bfloat16: autocast (the distribution math float32)"""


@dataclass(frozen=True)
class PPOConfig(AgentConfig):
    """PPO: clipped surrogate and/or KL penalty (Schulman et al. 2017, sections 3-4)."""

    clip: bool = True
    """use the clipped surrogate; clip_range is also where clip_fraction is measured"""
    clip_range: float = 0.2
    """ε of the clipped surrogate"""
    clip_range_schedule: Literal["constant", "linear"] = "constant"
    """linear: ε times the share of training left"""
    clip_range_vf: float | None = None
    """clip the value's change per update to this (null: no clipping)"""
    kl_penalty: Literal["adaptive", "fixed", "off"] = "off"
    """β·KL in the loss: β adapted by kl_controller, fixed at kl_beta, or none"""
    kl_target: float = 0.01
    """d_targ, the KL the adaptive penalty holds"""
    kl_target_per_dim: bool = False
    """hold kl_target·d: d the action's dimensions (Gaussian, MultiDiscrete, bits; Discrete: 1)"""
    kl_target_final: float | None = None
    """anneal d_targ linearly from kl_target to this over training, MDPO-style (null: constant)"""
    kl_spread: float = 0.0
    """κ: penalize β·(mean KL + κ·Var_s[KL_s]/d_targ) over a minibatch's states (0: the mean)"""
    kl_state_cap: float | None = None
    """c: a sample's surrogate stops pulling once its state's KL passes c·d_targ (null: no cap)"""
    kl_beta: float = 1.0
    """β₀, the penalty's first coefficient (the fixed one with kl_penalty=fixed)"""
    kl_band: float = 1.5
    """the band d_targ/kl_band … kl_band·d_targ the KL is held in"""
    kl_factor: float = 2.0
    """paper: β is multiplied or divided by this when the KL leaves the band"""
    kl_controller: Literal["paper", "rllib", "pid"] = "paper"
    """what moves the adaptive β (kl_control.py): the paper's rule, RLlib's, PID on log β"""
    kl_kp: float = 4.0
    """pid: proportional gain on the running KL's log error (gains chosen on seeds 100-102)"""
    kl_ki: float = 0.5
    """pid: integral gain on the update's log error"""
    kl_kd: float = 0.0
    """pid: derivative gain on the rise of the update's log error (0: not tuned)"""
    kl_rescale: bool = False
    """scale each update's policy step so that its KL lands in the band"""
    kl_step_max: float = 2.0
    """kl_rescale: the most a step whose KL fell below the band is lengthened (× the step)"""
    kl_lengthen_check: bool = True
    """kl_rescale: keep a lengthened step only if the surrogate is no lower there (false: always)"""
    target_kl: float | None = None
    """stop the update before a minibatch whose KL estimate k3 exceeds 1.5·target_kl (SB3's)"""


@dataclass(frozen=True)
class TRPOConfig(AgentConfig):
    """TRPO (Schulman et al. 2015); names and defaults are sb3-contrib's TRPO."""

    algo: Literal["ppo", "trpo"] = "trpo"
    """the algorithm (agents/ppo.py or agents/trpo.py)"""
    learning_rate: float = 1e-3
    """the critic's Adam learning rate"""
    batch_size: int = 128
    """the critic's minibatch size"""
    target_kl: float = 0.01
    """δ, the bound on the mean KL between successive policies"""
    cg_max_steps: int = 15
    """conjugate-gradient iterations at most"""
    cg_damping: float = 0.1
    """damping added to the Fisher matrix"""
    cg_tol: float = 1e-10
    """conjugate gradient stops when the squared residual is below this"""
    line_search: bool = True
    """backtrack until the step improves the surrogate within δ; false: the natural step (npg)"""
    line_search_shrinking_factor: float = 0.8
    """each backtracking try shrinks the step by this"""
    line_search_max_iter: int = 10
    """backtracking tries at most"""
    n_critic_updates: int = 10
    """the critic's epochs per update"""
    sub_sampling_factor: int = 1
    """the Fisher-vector products use every k-th state of the batch"""


@dataclass(frozen=True)
class RunSettings:
    steps: int = 100_000
    """env steps to train (a run stops at the first whole rollout at or past it)"""
    seed: int = 0
    """seeds the network, the envs and the sampling"""
    torch_threads: int = 1
    """torch's intra-op threads"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints; one is also written at the end"""
    keep_checkpoints: int = 3
    """the newest this many checkpoints are kept"""
    log_histograms: bool = True
    """log the per-state KL as a TensorBoard histogram"""
    eval_every: int = 0
    """env steps between evaluations (eval/mean_reward and a best checkpoint); 0: none"""
    eval_episodes: int = 10
    """deterministic episodes per evaluation, as SB3's EvalCallback"""
    eval_max_steps: int = 10_000
    """an evaluation episode's cap where the env has no time limit"""


def describe(cls: type) -> dict[str, str]:
    """Each field of a config dataclass and its one-line description (the string under it
    in the class body, its bases' for fields it inherits)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # bases first, so a subclass's text wins
        tree = ast.parse(inspect.getsource(klass))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for field_node, doc_node in zip(body, body[1:], strict=False):
            is_doc = isinstance(doc_node, ast.Expr) and isinstance(doc_node.value, ast.Constant)
            if isinstance(field_node, ast.AnnAssign) and is_doc:
                docs[field_node.target.id] = str(doc_node.value.value)  # type: ignore[attr-defined]
    return docs


@dataclass(frozen=True)
class RunConfig:
    agent_name: str
    run: RunSettings
    env: EnvConfig
    agent: AgentConfig

    def to_dict(self) -> dict:
        def plain(c):
            return {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c).items()
            }

        return {
            "agent_name": self.agent_name,
            "run": plain(self.run),
            "env": plain(self.env),
            "agent": plain(self.agent),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        return {**self.to_dict()["run"], **self.to_dict()["env"], **self.to_dict()["agent"]}


AGENT_CLASSES: dict[str, type[AgentConfig]] = {"ppo": PPOConfig, "trpo": TRPOConfig}


def explain(cfg: RunConfig) -> str:
    """Every key of the resolved config, section by section: its value, its default (the
    dataclass's, before presets) and its description; `*` marks a value that is not the
    default."""

    def shown(v: Any) -> str:
        return (
            yaml.safe_dump(
                list(v) if isinstance(v, tuple) else v, default_flow_style=True, width=1000
            )
            .strip()
            .removesuffix("\n...")
        )

    lines = []
    for section, part in (("run", cfg.run), ("env", cfg.env), ("agent", cfg.agent)):
        docs = describe(type(part))
        rows = []
        for f in dataclasses.fields(part):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            value = getattr(part, f.name)
            mark = "*" if value != default else " "
            rows.append((f.name, shown(value), shown(default), mark, docs.get(f.name, "")))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines.append(f"{section}:")
        lines += [
            f"  {k:<{w[0]}}  {v:<{w[1]}} {m} default {d:<{w[2]}}  {doc}" for k, v, d, m, doc in rows
        ]
    return "\n".join(lines) + "\n"


# Allowed values: key -> (predicate, what is allowed). Types are checked from the annotations;
# every number must be finite and every integer below BIG.
BIG = 2**31
_positive_int = (lambda v: 1 <= v < BIG, f"an integer in 1..{BIG - 1}")
_positive = (lambda v: v > 0, "a number > 0")
_nonneg = (lambda v: v >= 0, "a number ≥ 0")
_positive_or_null = (lambda v: v is None or v > 0, "null or a number > 0")
_unit = (lambda v: 0 < v <= 1, "a number in (0, 1]")
RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "steps": (lambda v: 1 <= v <= 10**12, "an integer in 1..10^12"),
    # (numpy seeds take < 2^32; eval's episodes start at seed + 10000 + k)
    "seed": (lambda v: 0 <= v < 2**32 - 10**6, f"an integer in 0..{2**32 - 10**6 - 1}"),
    "torch_threads": (lambda v: 1 <= v <= 1024, "an integer in 1..1024"),
    "checkpoint_every": (lambda v: 0 <= v <= 10**12, "an integer in 0..10^12 (0: only at the end)"),
    "keep_checkpoints": (lambda v: 1 <= v <= 10**6, "an integer in 1..10^6"),
    "eval_every": (
        lambda v: 0 <= v <= 10**12,
        "an integer in 0..10^12 (0: no evaluation during training)",
    ),
    "eval_episodes": (lambda v: 1 <= v <= 10**6, "an integer in 1..10^6"),
    "eval_max_steps": _positive_int,
    "n_envs": (lambda v: 1 <= v <= 4096, "an integer in 1..4096"),
    "clip_obs": _positive,
    "clip_reward": _positive,
    "n_steps": _positive_int,
    "batch_size": _positive_int,
    "n_epochs": _positive_int,
    "learning_rate": _positive,
    "gamma": _unit,
    "gae_lambda": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "ent_coef": _nonneg,
    "vf_coef": _nonneg,
    "max_grad_norm": _positive,
    "net_arch": (
        lambda v: len(v) <= 64 and all(1 <= n <= 65536 for n in v),
        "a list of up to 64 layer sizes in 1..65536 ([]: the heads on the input or encoder)",
    ),
    "wrappers": (
        lambda v: all(_wrapper_entry(w) is not None for w in v),
        'a list of "package.module.Class" or {"package.module.Class": {kwarg: value}}',
    ),
    "clip_range": _positive,
    "clip_range_vf": _positive_or_null,
    "kl_target": _positive,
    "kl_target_final": _positive_or_null,
    "kl_spread": _nonneg,
    "kl_state_cap": _positive_or_null,
    "kl_step_max": (lambda v: v >= 1, "a number ≥ 1 (1: never lengthened)"),
    "kl_beta": _nonneg,
    "kl_band": (lambda v: v > 1, "a number > 1"),
    "kl_factor": (lambda v: v > 1, "a number > 1"),
    "kl_kp": _nonneg,
    "kl_ki": _nonneg,
    "kl_kd": _nonneg,
    "target_kl": _positive_or_null,
    "cg_max_steps": _positive_int,
    "cg_damping": _nonneg,
    "cg_tol": _nonneg,
    "line_search_shrinking_factor": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "line_search_max_iter": _positive_int,
    "n_critic_updates": _positive_int,
    "sub_sampling_factor": _positive_int,
    "policy": (
        lambda v: re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v) is not None,
        "null or package.module:factory",
    ),
}


WRAPPER = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+")


def _wrapper_entry(entry: Any) -> tuple[str, dict] | None:
    """A `wrappers` entry as (class path, kwargs), or None when it is malformed."""
    if isinstance(entry, dict) and len(entry) == 1:
        ((path, kwargs),) = entry.items()
        kwargs = {} if kwargs is None else kwargs
    else:
        path, kwargs = entry, {}
    if not isinstance(path, str) or not WRAPPER.fullmatch(path) or not isinstance(kwargs, dict):
        return None
    if not all(isinstance(k, str) for k in kwargs):
        return None
    return path, dict(kwargs)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """`value` (from YAML or the command line) as type `tp`, or a UserError naming the key."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0]) if len(inner) == 1 else value
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"  # (YAML reads a bare on / off as a boolean)
        if value not in args:
            raise UserError(
                f"{key}={value!r} is not valid: {key} takes one of {', '.join(map(str, args))}"
            )
        return value
    if tp in _SCALARS:
        return _SCALARS[tp](key, value)
    if tp is str:
        if not isinstance(value, str):
            raise UserTypeError(f"{key}={value!r} is not valid: {key} takes {_type_name(tp)}")
        return value
    return _container(key, value, tp, origin, args)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise UserTypeError(f"{key}={value!r} is not valid: {key} takes true or false")


def _as_int(key: str, value: Any) -> int:
    try:  # accept 1e6 and 100_000 for step counts
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise UserTypeError(f"{key}={value!r} is not valid: {key} takes an integer") from None
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not math.isfinite(number)
        or number != int(number)
    ):
        raise UserTypeError(f"{key}={value!r} is not valid: {key} takes an integer")
    return int(number)


def _as_float(key: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserTypeError(f"{key}={value!r} is not valid: {key} takes a number") from None
    if not math.isfinite(number):
        raise UserError(f"{key}={value!r} is not valid: {key} takes a finite number")
    return number


_SCALARS = {bool: _as_bool, int: _as_int, float: _as_float}


def _container(key: str, value: Any, tp: Any, origin: Any, args: tuple) -> Any:
    """A tuple (of args[0]), a list or a mapping, given as such or as its YAML text."""
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        if not isinstance(value, list | tuple):
            raise UserTypeError(
                f"{key}={value!r} is not valid: {key} takes a list such as [64, 64]"
            )
        return tuple(coerce(key, v, args[0]) for v in value)
    if tp is list or origin is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise UserTypeError(f"{key}={value!r} is not valid: {key} takes a list") from None
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise UserTypeError(f"{key}={value!r} is not valid: {key} takes a list")
        return list(value)
    if tp is dict or origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise UserTypeError(
                f"{key}={value!r} is not valid: {key} takes a mapping such as {{a: 1}}"
            )
        return dict(value)
    return value


def _check(key: str, value: Any) -> None:
    if key in RULES and value is not None:
        ok, allowed = RULES[key]
        if not ok(value):
            raise UserError(f"{key}={value!r} is out of range: {key} must be {allowed}")


def _build(cls: type, values: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in values:
            kwargs[f.name] = coerce(f.name, values[f.name], hints[f.name])
            _check(f.name, kwargs[f.name])
    return cls(**kwargs)


def _keys(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def all_keys(algo: str) -> set[str]:
    return _keys(RunSettings) | _keys(EnvConfig) | _keys(AGENT_CLASSES[algo])


def _unknown(key: str, algo: str, where: str) -> UserError:
    allowed = all_keys(algo)
    other = {k for c in AGENT_CLASSES.values() for k in _keys(c)} - allowed
    if key in other:
        return UserError(f"{where}: key {key!r} does not apply to a {algo} agent")
    close = difflib.get_close_matches(key, sorted(allowed), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return UserError(
        f"{where}: unknown key {key!r}{hint}; see `rl-trust config` for the keys of this agent"
    )


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys")
    return data


def presets(kind: str) -> dict[str, Path]:
    """Preset name -> file, for kind 'agents' or 'envs'."""
    folder = PRESET_ROOT / kind
    if not folder.is_dir():
        raise UserError(f"preset folder {folder} not found: set RL_TRUST_PRESETS to the repo root")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def preset_name(env_id: str) -> str:
    """The env preset's file name (without .yaml) for an env id: ALE/Pong-v5 → ALE_Pong-v5."""
    return env_id.replace("/", "_")


SECTIONS = ("per_algo", "per_tuning", "per_agent")  # an env preset's tuning, by whom it reaches


def _section(path: Path, kind: str) -> dict:
    return _read_yaml(path).get(kind) or {}


def _sections(env_file: Path, env_preset: dict, agents: dict[str, Path]) -> dict[str, dict]:
    """An env preset's sections (SECTIONS), popped from it. `per_algo` is keyed by algorithm,
    `per_tuning` by the `tuning` names the agent presets (`agents`) use, `per_agent` by agent
    preset: a key that names none is an error (a typo would silently tune nothing)."""
    sections = {kind: env_preset.pop(kind, None) or {} for kind in SECTIONS}
    tunings = (  # the agent presets are read only where there is a tuning to check
        {_read_yaml(path).get("tuning") for path in agents.values()} - {None}
        if sections["per_tuning"]
        else set()
    )
    known = {"per_algo": set(AGENT_CLASSES), "per_tuning": tunings, "per_agent": set(agents)}
    for kind, section in sections.items():
        for name in section:
            if name not in known[kind]:
                raise UserError(
                    f"{env_file}: {kind}.{name} names no {kind[4:]}: "
                    f"choose one of {', '.join(sorted(known[kind]))}"
                )
    return sections


def _preset_file(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if path.suffix not in YAML_SUFFIXES or not path.is_file():
        raise UserError(f"{flag} {path}: not a preset file (a .yaml file that exists)")
    return path


def preset_description(path: Path) -> str:
    return str(_read_yaml(path).get("description", ""))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {pair!r} is not valid: use --set key=value")
        if key in out:
            raise UserError(f"--set {key} is given twice: give each key once")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            out[key] = raw
    return out


def load(
    agent: str,
    env: str,
    overrides: dict[str, Any] | None = None,
    steps: int | float | None = None,
    seed: int | None = None,
    env_preset: str | Path | None = None,
    use_env_preset: bool = True,
    where: str = "--set",
) -> RunConfig:
    """Resolve agent preset ← env preset ← overrides into one validated RunConfig. `agent`
    names a preset or is a path to a user's agent preset file (*.yaml); `env_preset` is a
    path to a user's env preset file, used instead of the env's own preset;
    `use_env_preset=False` applies none; `where` is how messages name the overrides (the
    Python API's are keyword arguments)."""
    agents = presets("agents")
    if str(agent).endswith(YAML_SUFFIXES):
        path = _preset_file(agent, "--agent")
        agent = path.stem
        agents = {**agents, agent: path}
    if agent not in agents:
        raise UserError(
            f"unknown agent {agent!r}: choose one of {', '.join(agents)}, or a preset file "
            "(path/to/agent.yaml)"
        )
    agent_preset = _read_yaml(agents[agent])
    algo = agent_preset.get("algo", "ppo")
    if algo not in AGENT_CLASSES:
        raise UserError(f"{agents[agent]}: algo {algo!r} is not one of {', '.join(AGENT_CLASSES)}")
    layers = [
        (
            str(agents[agent]),
            {k: v for k, v in agent_preset.items() if k not in ("description", "tuning")},
        )
    ]
    if env_preset is not None:
        env_file = _preset_file(env_preset, "--env-preset")
    else:  # (an env the user built in Python gets no preset: it is theirs as it is)
        env_file = presets("envs").get(preset_name(env)) if use_env_preset else None
    layers += _env_layers(env, env_file, agents, agent, algo, agent_preset.get("tuning"))
    layers.append(("env", {"env_id": env}))
    cli = dict(overrides or {})
    for key, given in (("env_id", env), ("algo", algo)):
        if key in cli and cli[key] != given:
            flag = "--env" if key == "env_id" else f"the agent {agent!r}, whose algo is"
            raise UserError(f"{where} {key}={cli[key]} contradicts {flag} {given}: drop the {key}")
    if steps is not None:
        cli["steps"] = steps
    if seed is not None:
        cli["seed"] = seed
    layers.append((where, cli))

    merged: dict[str, Any] = {}
    for where, layer in layers:
        for key, value in layer.items():
            if key not in all_keys(algo):
                raise _unknown(key, algo, where)
            merged[key] = value
    return from_flat(agent, algo, merged)


def _env_layers(
    env: str, env_file: Path | None, agents: dict, agent: str, algo: str, tuning: str | None
) -> list[tuple[str, dict]]:
    """The env preset's layers over the agent preset: its top level, then its sections for
    the algorithm, the agent's named tuning and the agent itself, in that order."""
    layers: list[tuple[str, dict]] = []
    sections = dict.fromkeys(SECTIONS, {})
    if env_file is not None:
        env_preset = _read_yaml(env_file)
        sections = _sections(env_file, env_preset, agents)
        env_preset.pop("description", None)
        layers.append((str(env_file), env_preset))
        for kind, name in zip(SECTIONS, (algo, tuning, agent), strict=True):
            if name in sections[kind]:
                layers.append((f"{env_file} {kind}.{name}", sections[kind][name]))
    if tuning and tuning not in sections["per_tuning"]:
        tuned = [e for e, p in presets("envs").items() if tuning in _section(p, "per_tuning")]
        raise UserError(
            f"agent {agent!r} uses the {tuning!r} tuning, which env {env!r} does not have "
            f"(no per_tuning.{tuning} in {env_file or f'envs/{env}.yaml'}): "
            f"tuned envs are {', '.join(tuned) or 'none'}"
        )
    return layers


def from_flat(agent_name: str, algo: str, values: dict[str, Any]) -> RunConfig:
    cfg = RunConfig(
        agent_name=agent_name,
        run=_build(RunSettings, values),
        env=_build(EnvConfig, values),
        agent=_build(AGENT_CLASSES[algo], {**values, "algo": algo}),
    )
    validate(cfg)
    return cfg


def from_dict(data: dict) -> RunConfig:
    """The inverse of RunConfig.to_dict (config.yaml of a run, `rl-trust config` output)."""
    try:
        algo = data["agent"]["algo"]
        flat = {**data["run"], **data["env"], **data["agent"]}
        name = data["agent_name"]
    except (KeyError, TypeError):
        raise UserError("not an rl-trust config: expected agent_name, run, env and agent") from None
    if algo not in AGENT_CLASSES:
        raise UserError(f"algo {algo!r} is not one of {', '.join(AGENT_CLASSES)}")
    for key in flat:
        if key not in all_keys(algo):
            raise _unknown(key, algo, "config")
    return from_flat(name, algo, flat)


def validate(cfg: RunConfig) -> None:
    a, e = cfg.agent, cfg.env
    batch = a.n_steps * e.n_envs
    if batch > 2**24:
        raise UserError(
            f"the rollout n_steps·n_envs = {a.n_steps}·{e.n_envs} = {batch} is too large: "
            f"it must be ≤ {2**24}"
        )
    if a.normalize_advantage and batch < 2:
        raise UserError(
            f"the rollout n_steps·n_envs = {batch} cannot normalize advantages: "
            "it must be ≥ 2 (or normalize_advantage=false)"
        )
    if isinstance(a, PPOConfig) and a.normalize_advantage and a.batch_size < 2:
        raise UserError(
            "batch_size=1 cannot normalize advantages per minibatch: "
            "batch_size must be ≥ 2 (or normalize_advantage=false)"
        )
    if e.overlap and (e.vectorization == "sync" or e.n_envs < 2 or e.n_envs % 2):
        raise UserError(
            f"overlap=true steps two halves of the envs in other processes or threads: it "
            f"needs vectorization=async or envpool and an even n_envs ≥ 2 (here "
            f"vectorization={e.vectorization}, n_envs={e.n_envs})"
        )
    if e.action_masking == "on" and (e.vectorization == "envpool" or e.overlap):
        what = "vectorization=envpool" if e.vectorization == "envpool" else "overlap=true"
        raise UserError(
            f"action_masking=on: {what} takes no invalid-action masks; use vectorization=sync "
            "or async without overlap, or action_masking=off"
        )
    if e.overlap and e.normalize_obs:
        raise UserError(
            "overlap=true needs normalize_obs=false: both halves' observations update the "
            "statistics that the next actions are computed from"
        )
    if a.batch_size > batch:
        raise UserError(
            f"batch_size={a.batch_size} is larger than the rollout (n_steps·n_envs = "
            f"{a.n_steps}·{e.n_envs} = {batch}): batch_size must be ≤ {batch}"
        )
    if isinstance(a, PPOConfig) and not a.clip and a.kl_penalty == "off" and a.target_kl is None:
        raise UserError(
            "clip=false, kl_penalty=off and target_kl=null leave PPO unconstrained: "
            "turn on clip, a kl_penalty or target_kl"
        )
    _validate_network(a)


def _validate_network(a: AgentConfig) -> None:
    """The manual engine is the built-in MLP's, on the CPU."""
    if a.engine == "manual" and a.policy is not None:
        raise UserError(
            f"engine=manual cannot train policy={a.policy}: the manual engine is the built-in "
            "MLP's; use engine=auto or engine=autograd"
        )
    if a.engine == "manual" and a.precision != "float32":
        raise UserError(
            f"engine=manual computes in float32: precision={a.precision} needs engine=auto or "
            "engine=autograd"
        )
    if a.engine == "manual" and a.device == "cuda":
        raise UserError(
            "engine=manual runs on the CPU: device=cuda needs engine=auto or engine=autograd"
        )


def read_run(run_dir: Path) -> RunConfig:
    """The resolved config a run was trained with (its config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not an rl-trust run folder (no config.yaml)")
    try:
        return from_dict(yaml.safe_load(path.read_text()))
    except yaml.YAMLError:
        raise UserError(f"{path} is not valid YAML") from None
