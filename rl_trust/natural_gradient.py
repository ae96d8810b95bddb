"""The natural-gradient step of TRPO (Schulman et al. 2015, appendix C): the surrogate it
ascends, Fisher-vector products by double backpropagation, conjugate gradient, the step to
the edge of the trust region and the backtracking line search (tests/test_trpo_math.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def surrogate(family, params: Tensor, actions: Tensor, log_probs: Tensor, adv: Tensor) -> Tensor:
    """The importance-weighted surrogate L = E[r Â], r = π(a|s) / π_old(a|s), for the policy
    whose distribution parameters are `params` (TRPO's objective; kl_rescale's check)."""
    return (torch.exp(family.log_prob(params, actions) - log_probs) * adv).mean()


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor], b: Tensor, max_iters: int, tol: float = 1e-10
) -> tuple[Tensor, int, float]:
    """Solve A x = b for symmetric positive-definite A, given only products A·v.

    Stops after `max_iters` iterations or once the squared residual ‖b − A x‖² < tol.
    Returns x, the iterations done and the final residual norm ‖b − A x‖.
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    iters = 0
    while iters < max_iters and rr >= tol:
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
        iters += 1
    return x, iters, float(rr.sqrt())


def fisher_vector_product(
    mean_kl: Tensor, params: list[Tensor], damping: float
) -> Callable[[Tensor], Tensor]:
    """v ↦ (F + damping·I) v, with F the Hessian of the mean KL(π_old‖π_θ) at θ = θ_old.

    At θ_old the KL and its gradient vanish and its Hessian is the Fisher information of the
    policy, so F v = ∇_θ (∇_θ KL · v). The first gradient is taken once, with its graph, and
    every product differentiates it again.
    """
    grads = torch.autograd.grad(mean_kl, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])

    def product(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(flat @ v, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]) + damping * v

    return product


def natural_step(
    g: Tensor, Fvp: Callable[[Tensor], Tensor], delta: float, max_iters: int, tol: float
) -> tuple[Tensor, dict[str, float]]:
    """The step to the edge of the trust region along the natural gradient:

        x ≈ F⁻¹ g (conjugate gradient),   s = √(2δ / xᵀF x) · x,

    so that the quadratic model of the KL, ½ sᵀF s, equals δ. Returns s (NaN where
    xᵀF x ≤ 0, which no line search accepts) and the CG and curvature diagnostics.
    """
    x, iters, residual = conjugate_gradient(Fvp, g, max_iters, tol)
    xFx = float(x @ Fvp(x))
    scale = math.sqrt(2 * delta / xFx) if xFx > 0 else float("nan")
    return scale * x, {"cg_iters": iters, "cg_residual": residual, "xFx": xFx}


def line_search(
    evaluate: Callable[[float], tuple[float, float]],
    max_kl: float,
    shrink: float,
    max_iter: int,
) -> tuple[float | None, int]:
    """Backtrack along the full step: try fractions 1, shrink, shrink², ... and accept the
    first whose (surrogate improvement, mean KL) = evaluate(fraction) improves the surrogate
    and keeps the KL within max_kl. Returns (fraction or None if none qualified, tries)."""
    for i in range(max_iter):
        fraction = shrink**i
        improvement, kl = evaluate(fraction)
        if kl <= max_kl and improvement > 0:  # NaN fails both, so it is never accepted
            return fraction, i + 1
    return None, max_iter
