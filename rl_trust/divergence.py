"""The KL divergence between successive policies, and everything measured about it.

Closed forms, per state, for the distribution families our policies use. Each takes the
distributions' flat parameters (logits, or mean and log-std) and returns one value per
state, summed over independent action dimensions:

    Categorical   KL(p‖q) = Σ_a p(a) (log p(a) − log q(a))
    Bernoulli     the same over {0, 1}, per dimension
    Gaussian      KL(p‖q) = log σ_q/σ_p + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½, per dimension

Sample estimators on actions drawn from p, with r = q(a)/p(a) (Schulman, "Approximating
KL divergence", 2020):  k1 = −log r,  k2 = ½(log r)²,  k3 = (r − 1) − log r.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rl_trust import tags as T


def categorical_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p‖q) of categoricals over the last axis."""
    logp = logits_p.log_softmax(-1)
    logq = logits_q.log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def categorical_entropy(logits: Tensor) -> Tensor:
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def bernoulli_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p‖q) of independent Bernoullis, summed over the last axis."""
    p1 = torch.sigmoid(logits_p)
    # log σ(x) = −softplus(−x), log(1 − σ(x)) = −softplus(x)
    kl = p1 * (F.softplus(-logits_q) - F.softplus(-logits_p)) + (1 - p1) * (
        F.softplus(logits_q) - F.softplus(logits_p)
    )
    return kl.sum(-1)


def bernoulli_entropy(logits: Tensor) -> Tensor:
    p1 = torch.sigmoid(logits)
    return (p1 * F.softplus(-logits) + (1 - p1) * F.softplus(logits)).sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p‖q) of diagonal Gaussians, summed over the last axis."""
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    mahalanobis = ((mean_p - mean_q) * torch.exp(-log_std_q)).square()
    return (log_std_q - log_std_p + 0.5 * (var_ratio + mahalanobis - 1)).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    return (log_std + 0.5 * (1.0 + torch.log(torch.tensor(2 * torch.pi)))).sum(-1)


def k3(log_r: Tensor) -> Tensor:
    """(r − 1) − log r per sample, log_r = log q(a) − log p(a) for a drawn from p: unbiased
    for KL(p‖q) and never negative (SB3's approx_kl, PPO's target_kl early stop)."""
    return torch.expm1(log_r) - log_r


def estimators(logp_old: Tensor, logp_new: Tensor) -> dict[str, Tensor]:
    """The sample estimators of KL(p‖q) per sample, for actions drawn from p = π_old."""
    log_r = logp_new - logp_old
    return {"k1": -log_r, "k2": 0.5 * log_r.square(), "k3": k3(log_r)}


def summary(
    forward: Tensor, reverse: Tensor, entropy: Tensor, logp_old: Tensor, logp_new: Tensor
) -> dict:
    """Everything logged about KL(p‖q) for one update, under the kl/* tag names, from the
    per-state exact KL(p‖q) (`forward`) and KL(q‖p) (`reverse`), p's `entropy`, and the
    log-probabilities under p and q of actions drawn from p (p = the rollout policy, q = the
    updated one; Family.kl_stats computes these). "kl/forward" holds the per-state values,
    for the histogram; everything else is a float.
    """
    est = estimators(logp_old, logp_new)
    return {
        T.KL_FORWARD: forward,
        T.KL_FORWARD_MEAN: forward.mean().item(),
        T.KL_FORWARD_MAX: forward.max().item(),
        T.KL_FORWARD_P95: torch.quantile(forward, 0.95).item(),
        T.KL_REVERSE_MEAN: reverse.mean().item(),
        T.KL_K1: est["k1"].mean().item(),
        T.KL_K2: est["k2"].mean().item(),
        T.KL_K3: est["k3"].mean().item(),
        T.KL_ENTROPY: entropy.mean().item(),
        T.KL_CROSS_ENTROPY: (entropy + forward).mean().item(),
    }
