"""The autograd engine: `ActorCritic`, the policy every agent and the rollout use.

Any extractor with stable-baselines3's contract (forward(obs) → (latent_pi, latent_vf),
attributes latent_dim_pi and latent_dim_vf) gets the action head, the log-std and the value
head here, and trains by torch.autograd from the closed-form ∂L/∂(distribution parameters)
the agents compute. nets/manual.py is the built-in MLP with its backward written out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.nets.families import Family
from rl_trust.nets.observations import Normalize, Observation, identity


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
        layout: Observation,
        family: Family,
        extractor: nn.Module,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
        autocast: torch.dtype | None = None,
    ):
        super().__init__()
        self.autocast = autocast  # the extractor's arithmetic under torch.autocast (bfloat16)
        self.family = fam = family  # the action distribution (nets/families.py)
        self.obs_layout = layout  # how observations are stored and fed in (nets/observations.py)
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
                grads = (
                    torch.autograd.grad(
                        latent.sum(), [p for _, p in named], allow_unused=True, retain_graph=True
                    )
                    if named
                    else []
                )
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
        """A batch of raw observations as the rollout stores them (nets/observations.py): vector
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

    def sampler(self, rng: np.random.Generator) -> Callable[..., np.ndarray]:
        """Actions sampled from the current policy, for the rollout's per-step path: one
        forward pass without a graph, then family.sample_numpy on its output (masked by
        the states' invalid-action masks where sample(x, mask) gives them)."""
        fam = self.family

        @torch.no_grad()
        def sample(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
            params = self.dist_params(self.obs_layout.tensor(x))
            return fam.sample_numpy(params.cpu().numpy(), rng, mask)

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
        pairs = [
            (out, d)
            for out, d in zip(cache, (d_params, d_values), strict=True)
            if out is not None and d is not None
        ]
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
