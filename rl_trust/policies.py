"""Actor-critic networks and their action distributions.

A policy outputs a flat tensor of distribution parameters per state (logits, or mean and
log-std). The rollout stores those parameters, so the old policy's distribution is known
exactly at update time and the exact KL between old and new can be computed per state.
Each action space maps to one `Family`, which does the distribution math on such tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_trust import divergence as D
from rl_trust.errors import UserError


@dataclass(frozen=True)
class Family:
    """A distribution family over one action space; `params` is (batch, n_params)."""

    kind: str  # "categorical" | "multicategorical" | "bernoulli" | "gaussian"
    sizes: tuple[int, ...]  # categories per component, or the action dimension
    low: np.ndarray | None = None  # Box bounds, for clipping actions sent to the env
    high: np.ndarray | None = None

    @property
    def n_params(self) -> int:
        return 2 * self.sizes[0] if self.kind == "gaussian" else sum(self.sizes)

    @property
    def action_dim(self) -> int:  # columns of the stored action tensor
        return (
            1
            if self.kind == "categorical"
            else len(self.sizes)
            if self.kind == "multicategorical"
            else self.sizes[0]
        )

    def _components(self, params: Tensor) -> tuple[Tensor, ...]:
        return params.split(list(self.sizes), dim=-1)

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        if self.kind == "gaussian":
            mean, log_std = params.chunk(2, dim=-1)
            z = (actions - mean) * torch.exp(-log_std)
            return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        if self.kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params, actions, reduction="none").sum(-1)
        idx = actions.long()
        return sum(
            logits.log_softmax(-1).gather(-1, idx[:, i : i + 1]).squeeze(-1)
            for i, logits in enumerate(self._components(params))
        )

    def entropy(self, params: Tensor) -> Tensor:
        if self.kind == "gaussian":
            return D.gaussian_entropy(params.chunk(2, dim=-1)[1])
        if self.kind == "bernoulli":
            return D.bernoulli_entropy(params)
        return sum(D.categorical_entropy(c) for c in self._components(params))

    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        """Exact per-state KL(p‖q)."""
        if self.kind == "gaussian":
            return D.gaussian_kl(*p.chunk(2, dim=-1), *q.chunk(2, dim=-1))
        if self.kind == "bernoulli":
            return D.bernoulli_kl(p, q)
        return sum(
            D.categorical_kl(a, b)
            for a, b in zip(self._components(p), self._components(q), strict=True)
        )

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.kind == "gaussian":
            mean, log_std = params.chunk(2, dim=-1)
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            return mean + noise * log_std.exp()
        if self.kind == "bernoulli":
            u = torch.rand(params.shape, generator=generator, dtype=params.dtype)
            return (u < torch.sigmoid(params)).to(params.dtype)
        cols = [
            torch.multinomial(c.softmax(-1), 1, generator=generator)
            for c in self._components(params)
        ]
        return torch.cat(cols, dim=-1).to(params.dtype)

    def sample_numpy(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`sample` in numpy, for the rollout's per-step path (no torch call per step)."""
        if self.kind == "gaussian":
            mean, log_std = np.split(params, 2, axis=-1)
            return mean + rng.standard_normal(mean.shape, np.float32) * np.exp(log_std)
        if self.kind == "bernoulli":
            return (rng.random(params.shape, np.float32) * (1 + np.exp(-params)) < 1).astype(
                np.float32
            )
        cols = []
        for logits in np.split(params, np.cumsum(self.sizes)[:-1], axis=-1):
            p = np.exp(logits - logits.max(-1, keepdims=True))
            cdf = np.cumsum(p, -1)
            u = rng.random((len(p), 1)) * cdf[:, -1:]  # inverse CDF of the unnormalized weights
            cols.append(np.minimum((cdf < u).sum(-1), logits.shape[-1] - 1))
        return np.stack(cols, -1).astype(np.float32)

    def mode(self, params: Tensor) -> Tensor:
        if self.kind == "gaussian":
            return params.chunk(2, dim=-1)[0]
        if self.kind == "bernoulli":
            return (params > 0).to(params.dtype)
        cols = [c.argmax(-1, keepdim=True) for c in self._components(params)]
        return torch.cat(cols, dim=-1).to(params.dtype)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the vector env takes them: clipped to the Box, integer otherwise."""
        if self.kind == "gaussian":
            return np.clip(actions, self.low, self.high)
        if self.kind == "categorical":
            return actions[:, 0].astype(np.int64)
        return actions.astype(np.int64 if self.kind == "multicategorical" else np.int8)


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


def family_for(space: gym.Space) -> Family:
    if isinstance(space, gym.spaces.Discrete):
        return Family("categorical", (int(space.n),))
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise UserError(f"action space {space} is not supported: MultiDiscrete must be 1-D")
        return Family("multicategorical", tuple(int(n) for n in space.nvec))
    if isinstance(space, gym.spaces.MultiBinary):
        return Family("bernoulli", (int(np.prod(space.shape)),))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return Family("gaussian", (space.shape[0],), space.low.copy(), space.high.copy())
    raise UserError(
        f"action space {space} is not supported: use Discrete, MultiDiscrete, MultiBinary "
        "or a 1-D Box"
    )


def obs_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise UserError(
        f"observation space {space} is not supported: use a Box or a Discrete observation space"
    )


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ActorCritic(nn.Module):
    """Separate policy and value MLPs (stable-baselines3's default for PPO and TRPO)."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        net_arch: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        ortho_init: bool = True,
    ):
        super().__init__()
        self.family = family_for(action_space)
        self.n_obs = obs_dim(obs_space)
        self.one_hot = isinstance(obs_space, gym.spaces.Discrete)
        self.activation = activation
        act = ACTIVATIONS[activation]
        sizes = [self.n_obs, *net_arch]
        self.pi_body, self.vf_body = mlp(sizes, act), mlp(sizes, act)
        fam = self.family
        n_out = fam.sizes[0] if fam.kind == "gaussian" else fam.n_params
        self.pi_head = nn.Linear(sizes[-1], n_out)
        self.vf_head = nn.Linear(sizes[-1], 1)
        self.log_std = (
            nn.Parameter(torch.full((fam.sizes[0],), float(log_std_init)))
            if fam.kind == "gaussian"
            else None
        )
        if ortho_init:  # gains as stable-baselines3: √2 hidden, 0.01 policy head, 1 value head
            for body in (self.pi_body, self.vf_body):
                for m in body:
                    if isinstance(m, nn.Linear):
                        nn.init.orthogonal_(m.weight, math.sqrt(2))
                        nn.init.zeros_(m.bias)
            for head, gain in ((self.pi_head, 0.01), (self.vf_head, 1.0)):
                nn.init.orthogonal_(head.weight, gain)
                nn.init.zeros_(head.bias)

    def preprocess(self, obs: Tensor) -> Tensor:
        if self.one_hot:
            return F.one_hot(obs.long().reshape(-1), self.n_obs).float()
        return obs.reshape(obs.shape[0], -1).float()

    def dist_params(self, obs: Tensor) -> Tensor:
        out = self.pi_head(self.pi_body(obs))
        if self.log_std is None:
            return out
        return torch.cat([out, self.log_std.expand_as(out)], dim=-1)

    def numpy_actor(self) -> Callable[[np.ndarray], np.ndarray]:
        """dist_params in numpy, on views of the current weights: the rollout calls it once per
        env step, where torch's per-call overhead would cost more than the arithmetic."""
        linears = [m for m in self.pi_body if isinstance(m, nn.Linear)] + [self.pi_head]
        weights = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in linears]
        act = np.tanh if self.activation == "tanh" else (lambda z: np.maximum(z, 0))
        log_std = None if self.log_std is None else self.log_std.detach().numpy()

        def forward(x: np.ndarray) -> np.ndarray:
            for W, b in weights[:-1]:
                x = act(x @ W + b)
            out = x @ weights[-1][0] + weights[-1][1]
            if log_std is None:
                return out
            return np.concatenate([out, np.broadcast_to(log_std, out.shape)], -1)

        return forward

    def preprocess_numpy(self, obs: np.ndarray) -> np.ndarray:
        if self.one_hot:
            return np.eye(self.n_obs, dtype=np.float32)[obs.astype(np.int64).reshape(-1)]
        return obs.reshape(obs.shape[0], -1).astype(np.float32, copy=False)

    def forward(self, obs: Tensor) -> Tensor:
        return self.dist_params(obs)

    def value(self, obs: Tensor) -> Tensor:
        return self.vf_head(self.vf_body(obs)).squeeze(-1)

    def policy_parameters(self) -> list[nn.Parameter]:
        params = [*self.pi_body.parameters(), *self.pi_head.parameters()]
        return params + ([self.log_std] if self.log_std is not None else [])

    def value_parameters(self) -> list[nn.Parameter]:
        return [*self.vf_body.parameters(), *self.vf_head.parameters()]
