"""The built-in encoders: the MLPs of vector observations, the Nature CNN of images, and
the combination of Dict / Tuple observations.

`MlpExtractor` is stable-baselines3's default for PPO and TRPO (separate policy and value
MLPs). The image and Dict / Tuple encoders (autograd engine) map a batch of observations,
as the network takes them (nets/observations.py: images float in [0, 1] channels first,
Discrete one-hot, a dict or tuple of tensors), to `features_dim` features. `EncoderMlp`
puts MlpExtractor's two MLPs (`net_arch`, `activation`) on the features: stable-baselines3's
ActorCriticPolicy with a features extractor, whose CnnPolicy and MultiInputPolicy these are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.errors import UserError
from rl_trust.nets.observations import ImageObs, Observation, StructuredObs

MIN_SIDE = 36  # the smallest image the Nature CNN's three convolutions take


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


class NatureCNN(nn.Module):
    """The convolutional torso of Mnih et al. 2015 (Nature), as stable-baselines3's
    NatureCNN: 32 8×8 filters stride 4, 64 4×4 stride 2, 64 3×3 stride 1, then a linear
    layer of `features_dim`, ReLU throughout."""

    def __init__(self, layout: ImageObs, features_dim: int = 512):
        super().__init__()
        c, h, w = layout.input_shape()
        if min(h, w) < MIN_SIDE:
            raise UserError(
                f"observation space {layout.space}: images of {h}×{w} are too small for the "
                f"Nature CNN, which needs at least {MIN_SIDE}×{MIN_SIDE} (resize them with a "
                "wrapper, or give your own network with policy=module:factory)"
            )
        self.cnn = nn.Sequential(
            nn.Conv2d(c, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        side = [(((n - 8) // 4 + 1 - 4) // 2 + 1) - 2 for n in (h, w)]
        self.linear = nn.Sequential(nn.Linear(64 * side[0] * side[1], features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, images: Tensor) -> Tensor:
        if torch.is_grad_enabled() and images.device.type == "cpu":
            # channels last where a gradient will flow: oneDNN's convolution backward is
            # 1.3-2.7× faster on the CPU that way (the 8×8 stride-4 layer most); the rollout's
            # small no-grad batches are faster as they are. (ImageObs.to_input already gives
            # them so: then this is no copy.)
            images = images.contiguous(memory_format=torch.channels_last)
        return self.linear(self.cnn(images))


class Flatten(nn.Module):
    """A vector (or one-hot) observation, flattened."""

    def __init__(self, layout: Observation):
        super().__init__()
        self.features_dim = math.prod(layout.input_shape())

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class Combined(nn.Module):
    """One encoder per key or element, features concatenated in the space's order, as
    stable-baselines3's CombinedExtractor: a Nature CNN of 256 features for an image,
    flattened otherwise (a Discrete part arrives one-hot)."""

    def __init__(self, layout: StructuredObs):
        super().__init__()
        self.encoders = nn.ModuleList(
            NatureCNN(part, 256) if isinstance(part, ImageObs) else Flatten(part)
            for part in layout.parts.values()
        )
        self.features_dim = sum(e.features_dim for e in self.encoders)

    def forward(self, obs: dict | tuple) -> Tensor:
        parts = obs.values() if isinstance(obs, dict) else obs
        return torch.cat([e(x) for e, x in zip(self.encoders, parts, strict=True)], dim=1)


def encoder_for(layout: Observation) -> nn.Module:
    if isinstance(layout, ImageObs):
        return NatureCNN(layout)
    if isinstance(layout, StructuredObs):
        return Combined(layout)
    return Flatten(layout)


class EncoderMlp(nn.Module):
    """The observation's encoder, then MlpExtractor's policy and value MLPs on its features.
    `share`: one encoder for both (SB3's PPO default); else one each (TRPO constrains the
    policy's parameters apart from the critic's). Meets the extractor contract."""

    def __init__(
        self, layout: Observation, net_arch: tuple[int, ...], activation: str, share: bool
    ):
        super().__init__()
        self.encoder_pi = encoder_for(layout)
        self.encoder_vf = None if share else encoder_for(layout)
        self.mlp = MlpExtractor(self.encoder_pi.features_dim, net_arch, activation)
        self.latent_dim_pi, self.latent_dim_vf = self.mlp.latent_dim_pi, self.mlp.latent_dim_vf

    def forward_actor(self, obs) -> Tensor:
        return self.mlp.forward_actor(self.encoder_pi(obs))

    def forward_critic(self, obs) -> Tensor:
        encoder = self.encoder_pi if self.encoder_vf is None else self.encoder_vf
        return self.mlp.forward_critic(encoder(obs))

    def forward(self, obs) -> tuple[Tensor, Tensor]:
        if self.encoder_vf is not None:
            return self.forward_actor(obs), self.forward_critic(obs)
        features = self.encoder_pi(obs)
        return self.mlp.forward_actor(features), self.mlp.forward_critic(features)
