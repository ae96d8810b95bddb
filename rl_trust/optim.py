"""Adam (Kingma & Ba 2015) on one flat parameter vector, as torch.optim.Adam computes it.

The update takes thousands of small steps per rollout; torch.optim's per-call machinery
(hooks, profiling records, parameter-group loops) costs several times the arithmetic of a
64×64 network, so the step is written out here in its six in-place operations:

    m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
    θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Adam:
    def __init__(self, param: Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        (b1, b2), g = self.betas, self.param.grad
        self.t += 1
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.t, self.lr = int(state["t"]), float(state["lr"])
