"""Proximal Policy Optimization (Schulman et al. 2017), every variant of sections 3 and 4.

Over n_epochs of minibatches, maximize

    L(θ) = E[ min(r Â, clip(r, 1−ε, 1+ε) Â) ]  (or E[r Â] without clipping)
           − β · KL(π_old ‖ π_θ)                  (the penalty; or KL(π_θ ‖ π_old) reversed)
           − c₁ (V_θ(s) − R̂)² + c₂ H(π_θ)

with r = π_θ(a|s) / π_old(a|s). After the update, with d the batch's mean exact KL in the
penalty's direction, the adaptive rule moves β once (trust_region.adapt_beta). With
target_kl, a minibatch whose estimated KL (k3) exceeds 1.5·target_kl stops the update
before its gradient step, as stable-baselines3 does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rl_trust import divergence, trust_region
from rl_trust.config import PPOConfig
from rl_trust.errors import Diverged
from rl_trust.policies import ActorCritic, flat_parameters
from rl_trust.rollout import Batch, normalize_per_minibatch


class PPO:
    def __init__(self, cfg: PPOConfig, policy: ActorCritic, generator: torch.Generator):
        self.cfg, self.policy, self.generator = cfg, policy, generator
        self.params = flat_parameters(list(policy.parameters()))  # policy and value, one vector
        self.optimizer = torch.optim.Adam([self.params], lr=cfg.learning_rate, eps=1e-5, fused=True)
        self.beta = cfg.kl_beta if cfg.kl_penalty != "off" else 0.0
        self.grad_steps = 0

    def penalty_kl(self, old, new):
        """Per-state KL in the penalty's direction."""
        fam = self.policy.family
        return fam.kl(old, new) if self.cfg.kl_direction == "forward" else fam.kl(new, old)

    def update(self, batch: Batch, progress_remaining: float = 1.0) -> dict:
        cfg, pi, fam = self.cfg, self.policy, self.policy.family
        lr = cfg.learning_rate * (progress_remaining if cfg.lr_schedule == "linear" else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        eps = cfg.clip_range
        logged: list[Tensor] = []  # per minibatch: pg, vf, entropy, kl penalty, k3, clip fraction
        steps, stopped = 0, False

        for _ in range(cfg.n_epochs):
            epoch = batch.shuffled(self.generator)
            if cfg.normalize_advantage:
                epoch.advantages = normalize_per_minibatch(epoch.advantages, cfg.batch_size)
            for mb in epoch.minibatches(cfg.batch_size):
                params = pi.dist_params(mb.obs)
                log_ratio = fam.log_prob(params, mb.actions) - mb.log_probs
                ratio = log_ratio.exp()
                surrogate = ratio * mb.advantages
                if cfg.clip:
                    surrogate = torch.min(surrogate, ratio.clamp(1 - eps, 1 + eps) * mb.advantages)
                pg_loss = -surrogate.mean()
                kl_pen = self.penalty_kl(mb.dist_params, params).mean() if self.beta > 0 else None

                values = pi.value(mb.obs)
                if cfg.clip_range_vf is not None:
                    values = mb.values + (values - mb.values).clamp(
                        -cfg.clip_range_vf, cfg.clip_range_vf
                    )
                vf_loss = F.mse_loss(mb.returns, values)
                entropy = fam.entropy(params).mean()

                with torch.no_grad():
                    approx_kl = (torch.expm1(log_ratio) - log_ratio).mean()  # k3
                if cfg.target_kl is not None and approx_kl.item() > 1.5 * cfg.target_kl:
                    stopped = True  # before this minibatch's gradient step
                    break

                loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
                if kl_pen is not None:
                    loss = loss + self.beta * kl_pen
                self.params.grad.zero_()
                loss.backward()
                grad_norm = self.params.grad.norm()  # clip the global norm, as clip_grad_norm_
                if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                    raise Diverged(
                        f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient norm'} "
                        f"at gradient step {self.grad_steps + 1} "
                        f"(minibatch {steps + 1} of this update)"
                    )
                self.params.grad.mul_((cfg.max_grad_norm / (grad_norm + 1e-6)).clamp(max=1.0))
                self.optimizer.step()
                steps += 1
                self.grad_steps += 1
                with torch.no_grad():
                    clip_fraction = ((ratio - 1).abs() > eps).float().mean()
                    pen = kl_pen.detach() if kl_pen is not None else torch.zeros(())
                    logged.append(torch.stack([pg_loss.detach(), vf_loss.detach(), entropy.detach(),
                                               pen, approx_kl, clip_fraction]))  # fmt: skip
            if stopped:
                break

        with torch.no_grad():
            metrics = divergence.kl_stats(
                fam, batch.dist_params, pi.dist_params(batch.obs), batch.actions, batch.log_probs
            )
        d = metrics["kl/forward_mean" if cfg.kl_direction == "forward" else "kl/reverse_mean"]
        beta_used = self.beta
        if cfg.kl_penalty == "adaptive":
            self.beta = trust_region.adapt_beta(
                self.beta, d, cfg.kl_target, cfg.kl_band, cfg.kl_factor
            )
        pg, vf, ent, pen, approx_kl, clip_fraction = (
            torch.stack(logged).mean(0).tolist() if logged else [0.0] * 6
        )
        n_minibatches = -(-len(batch) // cfg.batch_size)
        metrics.update({
            "kl/beta": beta_used,
            "kl/target": cfg.kl_target,
            "kl/target_low": cfg.kl_target / cfg.kl_band,
            "kl/target_high": cfg.kl_target * cfg.kl_band,
            "kl/penalty": pen,
            "train/policy_gradient_loss": pg,
            "train/value_loss": vf,
            "train/entropy_loss": -ent,
            "train/approx_kl": approx_kl,
            "train/clip_fraction": clip_fraction,
            "train/learning_rate": lr,
            "train/grad_steps": steps,
            "train/epochs": steps / n_minibatches,
            "train/early_stopped": float(stopped),
            "train/n_updates": self.grad_steps,
        })  # fmt: skip
        return metrics

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "beta": self.beta,
            "grad_steps": self.grad_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.beta, self.grad_steps = state["beta"], state["grad_steps"]
