"""One flat parameter vector, and Adam (Kingma & Ba 2015) on it, as torch.optim.Adam computes it.

The update takes thousands of small steps per rollout; torch.optim's per-call machinery
(hooks, profiling records, parameter-group loops) costs several times the arithmetic of a
64×64 network, so the step is written out here in its six in-place operations:

    m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
    θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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
