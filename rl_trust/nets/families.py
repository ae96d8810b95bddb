"""The action distributions: one `Family` subclass per kind of action space.

A policy outputs a flat tensor of distribution parameters per state (logits, or mean and
log-std). The rollout stores those parameters, so the old policy's distribution is known
exactly at update time and the exact KL between old and new can be computed per state.
Each family does the distribution math on such tensors, with its derivatives in closed
form (tests/test_policies.py checks them against autograd).

Invalid-action masks (envs/masks.py finds them; tests/test_masking.py): a mask is one row of
booleans per state, True where a choice is allowed. The masked distribution is the family's
own on parameters whose invalid choices are overwritten by ∓LARGE (`masked`): every closed
form then holds as it is and puts exactly no probability on them, so log-probabilities,
entropy and both KL directions are over the valid choices only; `masked_grad` carries a
derivative back to the network's outputs (nothing where a parameter was overwritten).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rl_trust import divergence as D
from rl_trust.errors import UserError

# what an invalid logit becomes: exp(−LARGE − max) is exactly 0 in float32 and float64, and
# finite where −inf would make 0·(−inf) = NaN in the entropy and KL (sb3-contrib's MaskablePPO
# masks with −1e8 too)
LARGE = 1e8


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
    def sample_numpy(
        self, params: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """`sample` in numpy, for the rollout's per-step path (no torch call per step); with
        `mask`, from the masked distribution (an invalid choice is never drawn)."""

    @abstractmethod
    def mode(self, params: Tensor) -> Tensor:
        """The most probable action per state."""

    @abstractmethod
    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the vector env takes them: clipped to the Box, integer otherwise."""

    # Invalid-action masks: (batch, mask_size) booleans, True where allowed

    @property
    def mask_size(self) -> int | None:
        """Booleans per state in a mask; None: this family takes no masks."""
        return None

    def masked(self, params: Tensor, mask: Tensor | None) -> Tensor:
        """The parameters of the masked distribution (`params` itself without a mask)."""
        if mask is None:
            return params
        raise NotImplementedError(f"{self.name} takes no action masks")

    def masked_grad(self, d: Tensor, mask: Tensor | None) -> Tensor:
        """∂L/∂params from ∂L/∂masked(params): nothing flows to an overwritten parameter."""
        return d

    def invalid_share(self, params: Tensor, mask: Tensor) -> Tensor:
        """Per state, the probability that the unmasked distribution `params` draws an
        action the mask forbids (what masking saves)."""
        raise NotImplementedError(f"{self.name} takes no action masks")

    # What the agents measure of two policies, from the closed forms above

    def directed_kl(self, old: Tensor, new: Tensor, direction: str) -> Tensor:
        """Per-state KL between the rollout policy (`old`) and the new one in a config's
        kl_direction: "forward" KL(π_old‖π_new), the papers'; "reverse" KL(π_new‖π_old), what
        sb3-contrib's TRPO bounds. PPO's penalty and TRPO's constraint are this."""
        return self.kl(old, new) if direction == "forward" else self.kl(new, old)

    def kl_stats(self, old: Tensor, new: Tensor, actions: Tensor, logp_old: Tensor) -> dict:
        """Everything logged about KL(p‖q) for one update (divergence.summary): p = `old`,
        the rollout policy, whose `actions` had log-probabilities `logp_old`; q = `new`."""
        forward, reverse = self.kl(old, new), self.kl(new, old)
        logp_new = self.log_prob(new, actions)
        return D.summary(forward, reverse, self.entropy(old), logp_old, logp_new)


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

    def sample_numpy(
        self, params: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> np.ndarray:
        if mask is not None:
            return self._sample_masked(params, rng, mask)
        out, start = np.empty((len(params), len(self.sizes)), np.float32), 0
        for j, k in enumerate(self.sizes):  # inverse CDF of each component's softmax weights
            logits = params[:, start : start + k]
            start += k
            cdf = np.exp(logits - logits.max(-1, keepdims=True)).cumsum(-1)
            u = rng.random((len(params), 1)) * cdf[:, -1:]
            out[:, j] = np.minimum((cdf < u).sum(-1), k - 1)
        return out

    def _sample_masked(
        self, params: np.ndarray, rng: np.random.Generator, mask: np.ndarray
    ) -> np.ndarray:
        """Inverse CDF of the softmax weights of the valid choices, u drawn in (0, total]:
        the first index whose CDF reaches u has a weight > 0, so it is never invalid."""
        out, start = np.empty((len(params), len(self.sizes)), np.float32), 0
        for j, k in enumerate(self.sizes):
            logits, valid = params[:, start : start + k], mask[:, start : start + k]
            start += k
            top = np.where(valid, logits, -np.inf).max(-1, keepdims=True)
            cdf = np.where(valid, np.exp(np.minimum(logits - top, 0.0)), 0.0).cumsum(-1)
            u = (1.0 - rng.random((len(params), 1))) * cdf[:, -1:]
            out[:, j] = (cdf < u).sum(-1)
        return out

    def mode(self, params: Tensor) -> Tensor:
        cols = [c.argmax(-1, keepdim=True) for c in self._components(params)]
        return torch.cat(cols, dim=-1).to(params.dtype)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions.astype(np.int64)

    # masks: one boolean per category, the components' one after the other (sb3-contrib's)

    @property
    def mask_size(self) -> int:
        return sum(self.sizes)

    def masked(self, params: Tensor, mask: Tensor | None) -> Tensor:
        return params if mask is None else params.masked_fill(~mask, -LARGE)

    def masked_grad(self, d: Tensor, mask: Tensor | None) -> Tensor:
        return d if mask is None else d.masked_fill(~mask, 0.0)

    def invalid_share(self, params: Tensor, mask: Tensor) -> Tensor:
        valid = [  # per component, the probability of a valid category
            (c.softmax(-1) * m).sum(-1)
            for c, m in zip(self._components(params), mask.split(list(self.sizes), -1), strict=True)
        ]
        return 1.0 - torch.stack(valid).prod(0)


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

    def sample_numpy(
        self, params: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> np.ndarray:
        u = rng.random(params.shape, np.float32)
        out = (u * (1 + np.exp(-params)) < 1).astype(np.float32)  # u < σ(x)
        if mask is not None:  # a bit that may not be 1 is 0; one that may not be 0 is 1
            out[~mask[:, 1::2]] = 0.0
            out[~mask[:, 0::2]] = 1.0
        return out

    def mode(self, params: Tensor) -> Tensor:
        return (params > 0).to(params.dtype)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions.astype(np.int8)

    # masks: two booleans per bit, whether it may be 0 and whether it may be 1 (sb3-contrib's
    # layout; envs/masks.py turns a mask of one boolean per bit, "may be set", into this)

    @property
    def mask_size(self) -> int:
        return 2 * self.sizes[0]

    def masked(self, params: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return params
        may0, may1 = mask[:, 0::2], mask[:, 1::2]  # x → −LARGE: P(1) = 0;  +LARGE: P(1) = 1
        return params.masked_fill(~may0, LARGE).masked_fill(~may1, -LARGE)

    def masked_grad(self, d: Tensor, mask: Tensor | None) -> Tensor:
        return d if mask is None else d.masked_fill(~(mask[:, 0::2] & mask[:, 1::2]), 0.0)

    def invalid_share(self, params: Tensor, mask: Tensor) -> Tensor:
        p1 = torch.sigmoid(params)
        valid = mask[:, 0::2] * (1 - p1) + mask[:, 1::2] * p1  # per bit: P(an allowed value)
        return 1.0 - valid.prod(-1)


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

    def sample_numpy(
        self, params: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> np.ndarray:
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
