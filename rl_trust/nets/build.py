"""Which network a config asks for, with which gradient engine, on which device.

    engine: auto | manual | autograd     device: auto | cpu | cuda     policy: module:factory

The built-in MLP trains with the manual engine (its backward written out by hand) unless
engine=autograd or device=cuda asks otherwise. `policy=package.module:factory` names a
callable factory(observation_space, action_space) returning an nn.Module with
stable-baselines3's custom-extractor contract: forward(obs) → (latent_pi, latent_vf) and the
attributes latent_dim_pi and latent_dim_vf; rl-trust adds the heads and trains it with the
autograd engine. `obs` arrives preprocessed as for the built-in encoders
(nets/observations.py), batch first: a vector float32 of the space's shape, a Discrete
one-hot, an image float in [0, 1] channels first, a Dict a dict of such tensors (a Tuple, a
tuple). Image, Dict and Tuple observations get the built-in encoders (nets/encoders.py)
unless a policy is given; either way they train with the autograd engine.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable

import gymnasium as gym
import torch
from torch import nn

from rl_trust.config import AgentConfig
from rl_trust.errors import UserError, one_line
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.encoders import EncoderMlp, MlpExtractor
from rl_trust.nets.families import family_for
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import Observation, layout_for

FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
CONTRACT = (
    "a callable factory(observation_space, action_space) returning an nn.Module whose "
    "forward(obs) gives (latent_pi, latent_vf) and which has the integer attributes "
    "latent_dim_pi and latent_dim_vf"
)


def check_import(spec: str | None, source: str, allow: bool) -> None:
    """A run folder's config is data: the module its `policy` names is imported (its code
    run) only when already loaded or when the user allows it (--allow-import)."""
    if spec is None:
        return
    module = spec.partition(":")[0]
    if not allow and module not in sys.modules:
        raise UserError(
            f"{source} names policy {spec!r}: importing module {module!r} runs its code; "
            "pass --allow-import if you trust this run"
        )


def load_factory(spec: str) -> Callable:
    """The callable `package.module:factory` names, or a UserError saying what was expected."""
    module_name, _, attr = spec.partition(":")
    if not FACTORY.fullmatch(spec):
        raise UserError(f"policy={spec!r} is not valid: expected package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: any error it raises while importing
        raise UserError(
            f"policy={spec!r}: cannot import module {module_name!r} ({one_line(e)}); "
            f"expected {module_name} on PYTHONPATH holding {attr}, {CONTRACT}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(
            f"policy={spec!r}: module {module_name!r} has no callable {attr!r}; expected {CONTRACT}"
        )
    return factory


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, dict):
        return "a dict of " + ", ".join(f"{k!r}: {_describe(v)}" for k, v in out.items())
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)}: " + ", ".join(_describe(o) for o in out)
    return type(out).__name__


def user_extractor(
    spec: str, obs_space: gym.Space, action_space: gym.Space, layout: Observation
) -> nn.Module:
    """The module the factory returns, checked against the contract on a probe batch of
    `layout`, the observation space's."""
    factory = load_factory(spec)
    try:
        module = factory(obs_space, action_space)
    except Exception as e:  # the user's code
        raise UserError(
            f"policy={spec!r}: factory(observation_space, action_space) raised {one_line(e)}"
        ) from None
    if not isinstance(module, nn.Module):
        raise UserError(
            f"policy={spec!r}: the factory returned {type(module).__name__}; expected {CONTRACT}"
        )
    dims = [getattr(module, name, None) for name in ("latent_dim_pi", "latent_dim_vf")]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise UserError(
            f"policy={spec!r}: the module has latent_dim_pi={dims[0]!r}, "
            f"latent_dim_vf={dims[1]!r}; expected both to be integers ≥ 1"
        )
    batch = 2
    probe = layout.probe(batch, torch.get_default_dtype())
    expected = f"(latent_pi, latent_vf) of shapes ({batch}, {dims[0]}) and ({batch}, {dims[1]})"
    try:
        with torch.no_grad():
            out = module(probe)
    except Exception as e:  # the user's code
        raise UserError(
            f"policy={spec!r}: forward(obs) on observations {_describe(probe)} "
            f"raised {one_line(e)}; expected it to return {expected}"
        ) from None
    shapes_ok = (
        isinstance(out, tuple | list)
        and len(out) == 2
        and all(isinstance(t, torch.Tensor) for t in out)
        and [tuple(t.shape) for t in out] == [(batch, dims[0]), (batch, dims[1])]
    )
    if not shapes_ok:
        raise UserError(
            f"policy={spec!r}: forward(obs) on observations {_describe(probe)} "
            f"returned {_describe(out)}; expected {expected}"
        )
    return module


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device=cuda: torch sees no CUDA device (torch.cuda.is_available() is false); "
            "use device=auto or device=cpu"
        )
    return torch.device(name)


def engine_of(cfg: AgentConfig, layout: Observation) -> str:
    """manual wherever it applies (the built-in MLP on vector observations, on the CPU),
    else autograd."""
    if cfg.engine == "manual" and not layout.is_vector:
        raise UserError(
            f"engine=manual trains the built-in MLP on vector observations, not "
            f"{layout.space}: use engine=auto or engine=autograd"
        )
    if cfg.engine != "auto":
        return cfg.engine
    builtin = cfg.policy is None and layout.is_vector
    on_cpu = cfg.device != "cuda" and cfg.precision == "float32"
    return "manual" if builtin and on_cpu else "autograd"


def make_policy(
    cfg: AgentConfig, obs_space: gym.Space, action_space: gym.Space, share_encoder: bool = True
) -> ActorCritic:
    """The config's network, freshly initialized from torch's global generator, on its
    device (the manual engine's always on the CPU); with share_encoder, an image or Dict
    encoder serves both the policy and the value (the agent's choice; SB3's CnnPolicy shares).
    The observation layout and the action family are found here, once, and handed down."""
    layout = layout_for(obs_space)  # a supported space, before the user's code sees it
    family = family_for(action_space)
    if engine_of(cfg, layout) == "manual":
        flat = layout_for(obs_space, flat=True)  # stored flat: the sampler multiplies matrices
        return MlpActorCritic(
            flat, family, cfg.net_arch, cfg.activation, cfg.log_std_init, cfg.ortho_init
        )
    if cfg.policy is not None:
        extractor = user_extractor(cfg.policy, obs_space, action_space, layout)
    elif layout.is_vector:
        extractor = MlpExtractor(math.prod(layout.shape), cfg.net_arch, cfg.activation)
    else:  # images, Dict, Tuple: their encoders
        extractor = EncoderMlp(layout, cfg.net_arch, cfg.activation, share=share_encoder)
    autocast = torch.bfloat16 if cfg.precision == "bfloat16" else None
    policy = ActorCritic(layout, family, extractor, cfg.log_std_init, cfg.ortho_init, autocast)
    return policy.to(resolve_device(cfg.device))
