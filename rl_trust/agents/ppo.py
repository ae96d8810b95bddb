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

from rl_trust import divergence, trust_region
from rl_trust.config import PPOConfig
from rl_trust.errors import Diverged
from rl_trust.policies import ActorCritic
from rl_trust.rollout import Batch


class PPO:
    def __init__(self, cfg: PPOConfig, policy: ActorCritic, generator: torch.Generator):
        self.cfg, self.policy, self.generator = cfg, policy, generator
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
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
        sums = {"pg": 0.0, "vf": 0.0, "ent": 0.0, "kl_pen": 0.0, "approx_kl": 0.0, "clip": 0.0}
        steps, stopped = 0, False
        n_minibatches = -(-len(batch) // cfg.batch_size)

        for _ in range(cfg.n_epochs):
            perm = torch.randperm(len(batch), generator=self.generator)
            for idx in perm.split(cfg.batch_size):
                obs, old = batch.obs[idx], batch.dist_params[idx]
                adv = batch.advantages[idx]
                if cfg.normalize_advantage and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)

                params = pi.dist_params(obs)
                log_ratio = fam.log_prob(params, batch.actions[idx]) - batch.log_probs[idx]
                ratio = log_ratio.exp()
                surrogate = ratio * adv
                if cfg.clip:
                    surrogate = torch.min(surrogate, ratio.clamp(1 - eps, 1 + eps) * adv)
                pg_loss = -surrogate.mean()
                kl_pen = (
                    self.penalty_kl(old, params).mean() if self.beta > 0 else pg_loss.new_zeros(())
                )

                values = pi.value(obs)
                if cfg.clip_range_vf is not None:
                    old_v = batch.values[idx]
                    values = old_v + (values - old_v).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
                vf_loss = F.mse_loss(batch.returns[idx], values)
                entropy = fam.entropy(params).mean()

                with torch.no_grad():
                    approx_kl = (torch.expm1(log_ratio) - log_ratio).mean().item()  # k3
                if cfg.target_kl is not None and approx_kl > 1.5 * cfg.target_kl:
                    stopped = True  # before this minibatch's gradient step
                    break

                loss = pg_loss + self.beta * kl_pen + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(pi.parameters(), cfg.max_grad_norm)
                if not torch.isfinite(loss) or not torch.isfinite(grad_norm):
                    raise Diverged(
                        f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient norm'} "
                        f"at gradient step {self.grad_steps + 1} "
                        f"(minibatch {steps + 1} of this update)"
                    )
                self.optimizer.step()
                steps += 1
                self.grad_steps += 1
                for key, value in (
                    ("pg", pg_loss),
                    ("vf", vf_loss),
                    ("ent", entropy),
                    ("kl_pen", kl_pen),
                    ("approx_kl", approx_kl),
                    ("clip", ((ratio - 1).abs() > eps).float().mean()),
                ):
                    sums[key] += float(value.detach()) if torch.is_tensor(value) else value
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
        n = max(steps, 1)
        metrics.update(
            {
                "kl/beta": beta_used,
                "kl/target": cfg.kl_target,
                "kl/target_low": cfg.kl_target / cfg.kl_band,
                "kl/target_high": cfg.kl_target * cfg.kl_band,
                "kl/penalty": sums["kl_pen"] / n,
                "train/policy_gradient_loss": sums["pg"] / n,
                "train/value_loss": sums["vf"] / n,
                "train/entropy_loss": -sums["ent"] / n,
                "train/approx_kl": sums["approx_kl"] / n,
                "train/clip_fraction": sums["clip"] / n,
                "train/learning_rate": lr,
                "train/grad_steps": steps,
                "train/epochs": steps / n_minibatches,
                "train/early_stopped": float(stopped),
                "train/n_updates": self.grad_steps,
            }
        )
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
