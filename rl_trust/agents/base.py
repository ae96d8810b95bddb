"""What every agent is to the training loop, the checkpoints and the dashboards."""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import Tensor

from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.rollout import Batch


class Agent(Protocol):
    """An agent owns its policy and its optimizer state. Per rollout the training loop calls
    `update` once with the batch and the share of training left (for schedules), and logs the
    flat metrics it returns (numbers as scalars, tensors as histograms); `state_dict` /
    `load_state_dict` carry what a checkpoint must restore beyond the policy's weights (plain
    data and tensors, no pickle); `charts` adds the agent's own TensorBoard charts to the
    KL charts every run has; `shares_encoder` says whether the policy and the value share an
    image or Dict encoder (the network is built so); `search_space` and `kl_target_key`
    are what `rl-trust tune` searches and plots of it."""

    shares_encoder: ClassVar[bool]
    kl_target_key: ClassVar[str]  # the config key of the KL the agent holds (tune plots it)
    policy: ActorCritic
    generator: torch.Generator  # the agent's own randomness (minibatch order), checkpointed

    def update(
        self, batch: Batch, progress_remaining: float = 1.0
    ) -> dict[str, float | Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def charts(self) -> dict[str, list]: ...

    @staticmethod
    def search_space(cfg) -> dict[str, dict]:
        """The agent's own keys of `rl-trust tune`'s built-in search space."""
        ...
