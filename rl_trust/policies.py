"""Actor-critic networks and their action distributions.

A policy outputs a flat tensor of distribution parameters per state (logits, or mean and
log-std). The rollout stores those parameters, so the old policy's distribution is known
exactly at update time and the exact KL between old and new can be computed per state.
Each action space maps to one `Family` subclass, which does the distribution math on such
tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_trust import divergence as D
from rl_trust.errors import UserError
from rl_trust.observations import Normalize, identity, layout_for


@dataclass(frozen=True)
class Family(ABC):
    """A distribution family over one action space; `params` is (batch, n_params).

    One subclass per family: MultiCategorical (Categorical is its one-component case),
    Bernoulli and DiagGaussian. Actions are stored as floats, `action_dim` columns per state.
    """

    sizes: tuple[int, ...]  # categories per component, or the action dimension

    name: ClassVar[str]  # for display and test ids
    # params end in a log-std per action dimension that no state changes: the policy's head
    # outputs the rest (n_head_outputs) and ActorCritic holds the log-std as a parameter
    has_log_std: ClassVar[bool] = False

    @property
    @abstractmethod
    def n_params(self) -> int:
        """Distribution parameters per state."""

    @property
    @abstractmethod
    def action_dim(self) -> int:
        """Columns of the stored action tensor."""

    @property
    def n_head_outputs(self) -> int:
        """The parameters the policy's head computes per state."""
        return self.n_params

    @abstractmethod
    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        """log π(a|s) per state."""

    @abstractmethod
    def entropy(self, params: Tensor) -> Tensor:
        """H(π) per state."""

    @abstractmethod
    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        """Exact per-state KL(p‖q)."""

    # Derivatives with respect to the (new) distribution parameters, in closed form: the
    # update applies them through the networks by hand (ActorCritic.backward) instead of
    # building an autograd graph per minibatch. tests/test_policies.py checks each against
    # autograd of the function it differentiates.

    @abstractmethod
    def log_prob_grad(self, params: Tensor, actions: Tensor) -> Tensor:
        """∂ log π(a|s) / ∂params."""

    @abstractmethod
    def entropy_grad(self, params: Tensor) -> Tensor:
        """∂H(π)/∂params."""

    @abstractmethod
    def kl_grad(self, old: Tensor, new: Tensor, reverse: bool = False) -> Tensor:
        """∂/∂new of KL(old‖new), or of KL(new‖old) when reverse."""

    @abstractmethod
    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One action per state, drawn from π, as the rollout stores it."""

    @abstractmethod
    def sample_numpy(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`sample` in numpy, for the rollout's per-step path (no torch call per step)."""

    @abstractmethod
    def mode(self, params: Tensor) -> Tensor:
        """The most probable action per state."""

    @abstractmethod
    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the vector env takes them: clipped to the Box, integer otherwise."""


class MultiCategorical(Family):
    """Independent categoricals (MultiDiscrete): `sizes` holds each component's number of
    categories, `params` their logits one after the other, an action one index each."""

    name = "multicategorical"

    @property
    def n_params(self) -> int:
        return sum(self.sizes)

    @property
    def action_dim(self) -> int:
        return len(self.sizes)

    def _components(self, params: Tensor) -> tuple[Tensor, ...]:
        return params.split(list(self.sizes), dim=-1)

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        idx = actions.long()
        return sum(
            logits.log_softmax(-1).gather(-1, idx[:, i : i + 1]).squeeze(-1)
            for i, logits in enumerate(self._components(params))
        )

    def entropy(self, params: Tensor) -> Tensor:
        return sum(D.categorical_entropy(c) for c in self._components(params))

    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        return sum(
            D.categorical_kl(a, b)
            for a, b in zip(self._components(p), self._components(q), strict=True)
        )

    def log_prob_grad(self, params: Tensor, actions: Tensor) -> Tensor:
        parts = [c.softmax(-1).neg_() for c in self._components(params)]
        for i, g in enumerate(parts):  # one-hot(a) − softmax, per component
            g.scatter_add_(-1, actions[:, i : i + 1].long(), torch.ones_like(g[:, :1]))
        return torch.cat(parts, dim=-1)

    def entropy_grad(self, params: Tensor) -> Tensor:
        parts = []
        for c in self._components(params):
            logq = c.log_softmax(-1)
            q = logq.exp()
            parts.append(-q * (logq - (q * logq).sum(-1, keepdim=True)))  # −q (log q + H)
        return torch.cat(parts, dim=-1)

    def kl_grad(self, old: Tensor, new: Tensor, reverse: bool = False) -> Tensor:
        parts = []
        for p_logits, q_logits in zip(self._components(old), self._components(new), strict=True):
            logq = q_logits.log_softmax(-1)
            if reverse:  # q (log q − log p − KL(q‖p))
                q, f = logq.exp(), logq - p_logits.log_softmax(-1)
                parts.append(q * (f - (q * f).sum(-1, keepdim=True)))
            else:  # softmax(q) − softmax(p)
                parts.append(logq.exp() - p_logits.softmax(-1))
        return torch.cat(parts, dim=-1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        cols = [
            torch.multinomial(c.softmax(-1), 1, generator=generator)
            for c in self._components(params)
        ]
        return torch.cat(cols, dim=-1).to(params.dtype)

    def sample_numpy(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out, start = np.empty((len(params), len(self.sizes)), np.float32), 0
        for j, k in enumerate(self.sizes):  # inverse CDF of each component's softmax weights
            logits = params[:, start : start + k]
            start += k
            cdf = np.exp(logits - logits.max(-1, keepdims=True)).cumsum(-1)
            u = rng.random((len(params), 1)) * cdf[:, -1:]
            out[:, j] = np.minimum((cdf < u).sum(-1), k - 1)
        return out

    def mode(self, params: Tensor) -> Tensor:
        cols = [c.argmax(-1, keepdim=True) for c in self._components(params)]
        return torch.cat(cols, dim=-1).to(params.dtype)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions.astype(np.int64)


class Categorical(MultiCategorical):
    """One categorical (Discrete), `sizes` = (number of actions,): the one-component
    MultiCategorical, except that the env takes the index itself, not a vector of one."""

    name = "categorical"

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions[:, 0].astype(np.int64)


class Bernoulli(Family):
    """Independent Bernoullis (MultiBinary), `sizes` = (dimension,): one logit x per
    dimension, P(1) = σ(x)."""

    name = "bernoulli"

    @property
    def n_params(self) -> int:
        return self.sizes[0]

    @property
    def action_dim(self) -> int:
        return self.sizes[0]

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params, actions, reduction="none").sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        return D.bernoulli_entropy(params)

    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        return D.bernoulli_kl(p, q)

    def log_prob_grad(self, params: Tensor, actions: Tensor) -> Tensor:
        return actions - torch.sigmoid(params)  # a − σ(x)

    def entropy_grad(self, params: Tensor) -> Tensor:
        q = torch.sigmoid(params)
        return -params * q * (1 - q)  # −σ′(x) log(σ/(1 − σ)) = −x σ (1 − σ)

    def kl_grad(self, old: Tensor, new: Tensor, reverse: bool = False) -> Tensor:
        q = torch.sigmoid(new)  # reverse: σ′(x_q) (x_q − x_p);  forward: σ(x_q) − σ(x_p)
        return q * (1 - q) * (new - old) if reverse else q - torch.sigmoid(old)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(params.shape, generator=generator, dtype=params.dtype)
        return (u < torch.sigmoid(params)).to(params.dtype)

    def sample_numpy(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(params.shape, np.float32)
        return (u * (1 + np.exp(-params)) < 1).astype(np.float32)  # u < σ(x)

    def mode(self, params: Tensor) -> Tensor:
        return (params > 0).to(params.dtype)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions.astype(np.int8)


@dataclass(frozen=True)
class DiagGaussian(Family):
    """A Gaussian with diagonal covariance over a 1-D Box, `sizes` = (dimension,): `params`
    are the means μ, then the log-stds s (σ = eˢ). `low` and `high` are the Box's bounds,
    which clip the actions sent to the env."""

    low: np.ndarray | None = None
    high: np.ndarray | None = None

    name = "gaussian"
    has_log_std = True

    @property
    def n_params(self) -> int:
        return 2 * self.sizes[0]

    @property
    def action_dim(self) -> int:
        return self.sizes[0]

    @property
    def n_head_outputs(self) -> int:  # the means: the log-std is a parameter of its own
        return self.sizes[0]

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        mean, log_std = params.chunk(2, dim=-1)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        return D.gaussian_entropy(params.chunk(2, dim=-1)[1])

    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        return D.gaussian_kl(*p.chunk(2, dim=-1), *q.chunk(2, dim=-1))

    def log_prob_grad(self, params: Tensor, actions: Tensor) -> Tensor:
        mean, log_std = params.chunk(2, dim=-1)
        z = (actions - mean) * torch.exp(-log_std)  # ∂/∂μ = z/σ, ∂/∂s = z² − 1
        return torch.cat([z * torch.exp(-log_std), z.square() - 1], dim=-1)

    def entropy_grad(self, params: Tensor) -> Tensor:
        mean, log_std = params.chunk(2, dim=-1)  # H = Σ s + const
        return torch.cat([torch.zeros_like(mean), torch.ones_like(log_std)], dim=-1)

    def kl_grad(self, old: Tensor, new: Tensor, reverse: bool = False) -> Tensor:
        mu_p, s_p = old.chunk(2, dim=-1)
        mu_q, s_q = new.chunk(2, dim=-1)
        if reverse:  # KL(q‖p) = s_p − s_q + (σ_q² + (μ_q − μ_p)²) / 2σ_p² − ½
            inv_var_p = torch.exp(-2 * s_p)
            return torch.cat(
                [(mu_q - mu_p) * inv_var_p, torch.exp(2 * s_q) * inv_var_p - 1], dim=-1
            )
        inv_var_q = torch.exp(-2 * s_q)  # KL(p‖q) = s_q − s_p + (σ_p² + Δμ²) / 2σ_q² − ½
        spread = (torch.exp(2 * s_p) + (mu_p - mu_q).square()) * inv_var_q
        return torch.cat([(mu_q - mu_p) * inv_var_q, 1 - spread], dim=-1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, log_std = params.chunk(2, dim=-1)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + noise * log_std.exp()

    def sample_numpy(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = self.sizes[0]
        return params[:, :d] + rng.standard_normal((len(params), d), np.float32) * np.exp(
            params[:, d:]
        )

    def mode(self, params: Tensor) -> Tensor:
        return params.chunk(2, dim=-1)[0]

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.low, self.high)


def family_for(space: gym.Space) -> Family:
    if isinstance(space, gym.spaces.Discrete):
        return Categorical((int(space.n),))
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise UserError(f"action space {space} is not supported: MultiDiscrete must be 1-D")
        return MultiCategorical(tuple(int(n) for n in space.nvec))
    if isinstance(space, gym.spaces.MultiBinary):
        return Bernoulli((int(np.prod(space.shape)),))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return DiagGaussian((space.shape[0],), space.low.copy(), space.high.copy())
    raise UserError(
        f"action space {space} is not supported: use Discrete, MultiDiscrete, MultiBinary "
        "or a 1-D Box"
    )


def flat_parameters(params: list[nn.Parameter]) -> nn.Parameter:
    """One contiguous Parameter whose slices are `params`, with a .grad whose slices are
    their .grad: gradients accumulate into it, so the clipping norm is one reduction and
    the optimizer one fused step over one tensor. Never set the parameters' .grad to None
    afterwards (zero flat.grad instead), or autograd would replace the views."""
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    return flat


def non_finite_grads(module: nn.Module) -> str:
    """The names of the parameters whose gradient holds a NaN or an infinity."""
    params = [(n, p) for n, p in module.named_parameters() if p.grad is not None]
    names = [n for n, p in params if not bool(torch.isfinite(p.grad).all())]
    return "every parameter" if len(names) == len(params) else ", ".join(names) or "no parameter"


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Activation:
    """One activation h = act(z) in each form the networks use: a module for MlpExtractor
    (the autograd engine), and for the manual engine a torch function, its backward from the
    output (∂L/∂z given ∂L/∂h and h) and a numpy function for the rollout's sampler.
    tests/test_policies.py checks that the forms agree."""

    module: type[nn.Module]
    torch_fn: Callable[[Tensor], Tensor]
    backward_from_output: Callable[[Tensor, Tensor], Tensor]
    numpy_fn: Callable[[np.ndarray], np.ndarray]


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(
        nn.Tanh,
        torch.tanh,
        torch.ops.aten.tanh_backward,  # (1 − h²) · ∂L/∂h
        np.tanh,
    ),
    "relu": Activation(
        nn.ReLU,
        torch.relu,
        lambda g, h: torch.ops.aten.threshold_backward(g, h, 0),  # [h > 0] · ∂L/∂h
        lambda z: np.maximum(z, 0),
    ),
}


def mlp_forward(layers: list[nn.Linear], act: Callable, x: Tensor) -> list[Tensor]:
    """Every layer's input, then the last layer's output (no activation after it)."""
    outs = [x]
    for i, m in enumerate(layers):
        z = torch.addmm(m.bias, outs[-1], m.weight.t())
        outs.append(act(z) if i + 1 < len(layers) else z)
    return outs


def mlp_backward(layers: list[nn.Linear], act_grad: Callable, outs: list[Tensor], d: Tensor):
    """Backpropagation by hand: adds ∂L/∂W = dᵀ·input and ∂L/∂b = Σ d of every layer into
    its .grad, given d = ∂L/∂output and mlp_forward's `outs`. Call it without autograd."""
    for i in reversed(range(len(layers))):
        m = layers[i]
        m.weight.grad.addmm_(d.t(), outs[i])
        m.bias.grad.add_(d.sum(0))
        if i > 0:
            d = act_grad(d.mm(m.weight), outs[i])


class MlpExtractor(nn.Module):
    """Separate policy and value MLPs on the flattened observation (stable-baselines3's
    default for PPO and TRPO), behind the extractor contract every network meets:
    forward(obs) → (latent_pi, latent_vf), of widths latent_dim_pi and latent_dim_vf."""

    def __init__(self, n_obs: int, net_arch: tuple[int, ...], activation: str):
        super().__init__()
        sizes = [n_obs, *net_arch]
        act = ACTIVATIONS[activation].module
        self.pi_body, self.vf_body = mlp(sizes, act), mlp(sizes, act)
        self.latent_dim_pi = self.latent_dim_vf = sizes[-1]

    def forward_actor(self, obs: Tensor) -> Tensor:
        return self.pi_body(obs.flatten(1))

    def forward_critic(self, obs: Tensor) -> Tensor:
        return self.vf_body(obs.flatten(1))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_actor(obs), self.forward_critic(obs)


class ActorCritic(nn.Module):
    """The policy every agent and the rollout use: observations in, distribution parameters
    and values out. An extractor (any nn.Module with stable-baselines3's contract: forward(obs)
    → (latent_pi, latent_vf), attributes latent_dim_pi and latent_dim_vf) computes the two
    latents; this adds the action-distribution head, the log-std and the value head.

    The agents find ∂L/∂(distribution parameters) and ∂L/∂values in closed form and hand
    them to `backward`, which carries them through the network by the chain rule. Here that
    is the autograd engine: `forward_train` keeps the graph as its cache and `backward` runs
    torch.autograd.backward from it, so any module trains. MlpActorCritic (the manual engine)
    is the built-in MLP, whose backward is written out by hand.

    The parameters stay where `.to(device)` puts them; observations given as tensors move
    there, and what comes out is on that device.
    """

    engine = "autograd"

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        extractor: nn.Module,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
        autocast: torch.dtype | None = None,
    ):
        super().__init__()
        self.autocast = autocast  # the extractor's arithmetic under torch.autocast (bfloat16)
        self.family = fam = family_for(action_space)
        self.obs_layout = layout_for(obs_space)  # how observations are stored and fed in
        self.extractor = extractor
        self.pi_head = nn.Linear(int(extractor.latent_dim_pi), fam.n_head_outputs)
        self.vf_head = nn.Linear(int(extractor.latent_dim_vf), 1)
        self.log_std = (
            nn.Parameter(torch.full((fam.action_dim,), float(log_std_init)))
            if fam.has_log_std
            else None
        )
        if ortho_init:  # gains as stable-baselines3: √2 hidden, 0.01 policy head, 1 value head
            for m in extractor.modules():
                if isinstance(m, nn.Linear | nn.Conv2d):
                    nn.init.orthogonal_(m.weight, math.sqrt(2))
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            for head, gain in ((self.pi_head, 0.01), (self.vf_head, 1.0)):
                nn.init.orthogonal_(head.weight, gain)
                nn.init.zeros_(head.bias)
        self._split_parameters()

    def _split_parameters(self) -> None:
        """Which of the extractor's parameters each latent depends on (found by autograd on
        a probe batch): TRPO needs the policy's and the critic's apart."""
        named = [(n, p) for n, p in self.extractor.named_parameters() if p.requires_grad]
        reached: list[set[str]] = []
        with torch.enable_grad():
            probe = self.obs_layout.probe(2, self.pi_head.weight.dtype)
            for latent in self.extractor(probe):
                grads = torch.autograd.grad(
                    latent.sum(), [p for _, p in named], allow_unused=True, retain_graph=True
                ) if named else []  # fmt: skip
                reached.append({n for (n, _), g in zip(named, grads, strict=True) if g is not None})
        pi, vf = reached
        self.shared = [f"extractor.{n}" for n, _ in named if n in pi and n in vf]
        heads_pi = ["pi_head.weight", "pi_head.bias"] + (
            ["log_std"] if self.log_std is not None else []
        )
        self._policy_names = [f"extractor.{n}" for n, _ in named if n not in vf or n in pi]
        self._policy_names += heads_pi
        self._value_names = [f"extractor.{n}" for n, _ in named if n in vf and n not in pi]
        self._value_names += ["vf_head.weight", "vf_head.bias"]

    @property
    def device(self) -> torch.device:
        return self.pi_head.weight.device

    def _input(self, obs):
        """Stored observations (a tensor, or an ObsBatch) as the extractor takes them, on
        the parameters' device: images scaled to [0, 1] there, a Dict as a dict of tensors."""
        w = self.pi_head.weight
        return self.obs_layout.to_input(obs, w.dtype, w.device)

    def _head(self, latent_pi: Tensor) -> Tensor:
        out = self.pi_head(latent_pi)
        if self.log_std is None:
            return out
        return torch.cat([out, self.log_std.expand_as(out)], dim=-1)

    def _extract(self, method, obs) -> Tensor | tuple[Tensor, ...]:
        """An extractor method on obs; under autocast in lower precision, its latents back
        in the heads' dtype (so heads, log-std and the distribution math keep theirs)."""
        if self.autocast is None:
            return method(obs)
        with torch.autocast(self.device.type, dtype=self.autocast):
            out = method(obs)
        dtype = self.pi_head.weight.dtype
        return tuple(t.to(dtype) for t in out) if isinstance(out, tuple) else out.to(dtype)

    def _latent_pi(self, obs: Tensor) -> Tensor:
        actor = getattr(self.extractor, "forward_actor", None)
        return self._extract(actor, obs) if actor else self._extract(self.extractor, obs)[0]

    def _latent_vf(self, obs: Tensor) -> Tensor:
        critic = getattr(self.extractor, "forward_critic", None)
        return self._extract(critic, obs) if critic else self._extract(self.extractor, obs)[1]

    def preprocess_numpy(self, obs, normalize: Normalize = identity):
        """A batch of raw observations as the rollout stores them (observations.py): vector
        parts float32 and passed through `normalize`, a Discrete one-hot, pixels uint8."""
        return self.obs_layout.store(obs, normalize)

    def dist_params(self, obs: Tensor) -> Tensor:
        return self._head(self._latent_pi(self._input(obs)))

    def value(self, obs: Tensor) -> Tensor:
        return self.vf_head(self._latent_vf(self._input(obs))).squeeze(-1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Distribution parameters and values."""
        latent_pi, latent_vf = self._extract(self.extractor, self._input(obs))
        return self._head(latent_pi), self.vf_head(latent_vf).squeeze(-1)

    @torch.no_grad()
    def evaluate(self, obs, size: int = 256) -> tuple[Tensor, Tensor]:
        """forward(obs) without a graph, `size` states at a time: a pass over a whole rollout
        holds one slice's activations (and one slice's pixels as floats), not the batch's.
        A batch of vectors goes in one pass: its activations are small."""
        if self.obs_layout.is_vector:
            return self(obs)
        pieces = [self(part) for part in obs.split(size)]
        return torch.cat([p for p, _ in pieces]), torch.cat([v for _, v in pieces])

    def sampler(self, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """Actions sampled from the current policy, for the rollout's per-step path: one
        forward pass without a graph, then family.sample_numpy on its output."""
        fam = self.family

        @torch.no_grad()
        def sample(x: np.ndarray) -> np.ndarray:
            params = self.dist_params(self.obs_layout.tensor(x))
            return fam.sample_numpy(params.cpu().numpy(), rng)

        return sample

    def forward_train(self, obs: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """dist_params and values (detached), with the cache `backward` needs: here the
        outputs themselves, their graph kept."""
        with torch.enable_grad():
            params, values = self(obs)
        return params.detach(), values.detach(), (params, values)

    def value_train(self, obs: Tensor) -> tuple[Tensor, tuple]:
        """values alone, with the cache `backward(cache, None, d_values)` needs."""
        with torch.enable_grad():
            values = self.value(obs)
        return values.detach(), (None, values)

    def backward(self, cache: tuple, d_params: Tensor | None, d_values: Tensor | None) -> None:
        """Add ∂L/∂(every parameter) into the .grad, given ∂L/∂dist_params (per state) and
        ∂L/∂values from forward_train; None skips that output. The chain rule at the
        distribution boundary: torch.autograd.backward(outputs, their gradients)."""
        pairs = [(out, d) for out, d in zip(cache, (d_params, d_values), strict=True)
                 if out is not None and d is not None]  # fmt: skip
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [d for _, d in pairs])

    def policy_parameters(self) -> list[nn.Parameter]:
        """The parameters the action distribution depends on (TRPO's θ)."""
        named = dict(self.named_parameters())
        return [named[n] for n in self._policy_names]

    def value_parameters(self) -> list[nn.Parameter]:
        """The critic's own parameters, none of the policy's."""
        named = dict(self.named_parameters())
        return [named[n] for n in self._value_names]


class MlpActorCritic(ActorCritic):
    """The built-in network, MlpExtractor's two MLPs, with the manual engine: its backward
    is written out by hand (no autograd graph per minibatch) and its rollout sampler runs in
    numpy. Parameters, outputs and initialization are those of
    ActorCritic(obs_space, action_space, MlpExtractor(...)) with the same seed."""

    engine = "manual"

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        net_arch: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        ortho_init: bool = True,
    ):
        layout = layout_for(obs_space, flat=True)  # stored flat: the sampler multiplies matrices
        if not layout.is_vector:
            raise UserError(
                f"engine=manual trains the built-in MLP on vector observations, not "
                f"{obs_space}: use engine=auto or engine=autograd"
            )
        extractor = MlpExtractor(layout.shape[0], tuple(net_arch), activation)
        super().__init__(obs_space, action_space, extractor, log_std_init, ortho_init)
        self.obs_layout = layout
        self.activation = activation
        linear = [m for m in extractor.pi_body if isinstance(m, nn.Linear)]
        self.pi_layers = linear + [self.pi_head]
        self.vf_layers = [m for m in extractor.vf_body if isinstance(m, nn.Linear)] + [self.vf_head]
        act = ACTIVATIONS[activation]
        self.act, self.act_grad = act.torch_fn, act.backward_from_output
        self._register_load_state_dict_pre_hook(_earlier_names)

    def sampler(self, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """Actions sampled from the current policy, computed in numpy on views of the weights:
        the rollout calls it once per env step, where torch's per-call overhead would cost
        more than the arithmetic. Draws as family.sample_numpy does (Gaussian: with σ = e^s
        computed once per rollout instead of once per step)."""
        weights = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in self.pi_layers]
        act = ACTIVATIONS[self.activation].numpy_fn
        std = None if self.log_std is None else np.exp(self.log_std.detach().numpy())
        fam, (W_out, b_out) = self.family, weights[-1]

        def sample(x: np.ndarray) -> np.ndarray:
            for W, b in weights[:-1]:
                x = act(x @ W + b)
            out = x @ W_out + b_out
            if std is None:
                return fam.sample_numpy(out, rng)
            return out + rng.standard_normal(out.shape, np.float32) * std

        return sample

    def forward_train(self, obs: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """dist_params and values, with the activations `backward` needs (no autograd)."""
        pi = mlp_forward(self.pi_layers, self.act, obs)
        vf = mlp_forward(self.vf_layers, self.act, obs)
        out = pi[-1]
        if self.log_std is not None:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out, vf[-1].squeeze(-1), (pi, vf)

    def value_train(self, obs: Tensor) -> tuple[Tensor, tuple]:
        vf = mlp_forward(self.vf_layers, self.act, obs)
        return vf[-1].squeeze(-1), (None, vf)

    def backward(self, cache: tuple, d_params: Tensor | None, d_values: Tensor | None) -> None:
        """Add ∂L/∂(every parameter) into the .grad, given ∂L/∂dist_params (per state) and
        ∂L/∂values from forward_train; None skips that network."""
        pi, vf = cache
        if d_params is not None:
            if self.log_std is not None:  # one log-std shared by every state
                d_params, d_log_std = d_params.chunk(2, dim=-1)
                self.log_std.grad.add_(d_log_std.sum(0))
            mlp_backward(self.pi_layers, self.act_grad, pi, d_params)
        if d_values is not None:
            mlp_backward(self.vf_layers, self.act_grad, vf, d_values.unsqueeze(-1))


def _earlier_names(state_dict: dict, prefix: str, *_) -> None:
    """Checkpoints from before the extractor held the MLPs name them pi_body.*, vf_body.*."""
    for key in list(state_dict):
        rest = key[len(prefix) :]
        if key.startswith(prefix) and rest.startswith(("pi_body.", "vf_body.")):
            state_dict[f"{prefix}extractor.{rest}"] = state_dict.pop(key)
