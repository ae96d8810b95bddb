"""The manual engine: the built-in MLP with its backward written out by hand.

No autograd graph per minibatch: `forward_train` keeps each layer's input, and `backward`
applies ∂L/∂W = dᵀ·input, ∂L/∂b = Σ d and the activation's derivative layer by layer; the
rollout's sampler runs in numpy on views of the weights. tests/test_engines.py checks it
against the autograd engine on the same network.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.encoders import ACTIVATIONS, MlpExtractor
from rl_trust.nets.families import Family
from rl_trust.nets.observations import Observation


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


class MlpActorCritic(ActorCritic):
    """The built-in network, MlpExtractor's two MLPs, with the manual engine: its backward
    is written out by hand (no autograd graph per minibatch) and its rollout sampler runs in
    numpy. Parameters, outputs and initialization are those of
    ActorCritic(layout, family, MlpExtractor(...)) with the same seed. `layout` is a flat
    vector's (nets/build.py checks): the sampler multiplies matrices."""

    engine = "manual"

    def __init__(
        self,
        layout: Observation,
        family: Family,
        net_arch: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        ortho_init: bool = True,
    ):
        extractor = MlpExtractor(layout.shape[0], tuple(net_arch), activation)
        super().__init__(layout, family, extractor, log_std_init, ortho_init)
        self.activation = activation
        linear = [m for m in extractor.pi_body if isinstance(m, nn.Linear)]
        self.pi_layers = linear + [self.pi_head]
        self.vf_layers = [m for m in extractor.vf_body if isinstance(m, nn.Linear)] + [self.vf_head]
        act = ACTIVATIONS[activation]
        self.act, self.act_grad = act.torch_fn, act.backward_from_output
        self._register_load_state_dict_pre_hook(_earlier_names)

    def sampler(self, rng: np.random.Generator) -> Callable[..., np.ndarray]:
        """Actions sampled from the current policy, computed in numpy on views of the weights:
        the rollout calls it once per env step, where torch's per-call overhead would cost
        more than the arithmetic. Draws as family.sample_numpy does (Gaussian: with σ = e^s
        computed once per rollout instead of once per step); sample(x, mask) from the
        distribution masked by the states' invalid-action masks."""
        weights = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in self.pi_layers]
        act = ACTIVATIONS[self.activation].numpy_fn
        std = None if self.log_std is None else np.exp(self.log_std.detach().numpy())
        fam, (W_out, b_out) = self.family, weights[-1]

        def sample(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
            for W, b in weights[:-1]:
                x = act(x @ W + b)
            out = x @ W_out + b_out
            if std is None:
                return fam.sample_numpy(out, rng, mask)
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
