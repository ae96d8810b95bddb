"""Trust Region Policy Optimization (Schulman et al. 2015, appendix C).

    maximize  L(θ) = E[ π_θ(a|s) / π_old(a|s) · Â ]   subject to   KL(π_old ‖ π_θ) ≤ δ

1. g = ∇L at θ_old; F = Hessian of the mean KL at θ_old (the Fisher), applied as F·v.
2. Conjugate gradient solves F x = g; the full step s = √(2δ / xᵀF x) · x.
3. Backtracking line search over s·shrinkᵏ accepts the first step that improves L and keeps
   the exact mean KL ≤ δ; if none does, θ stays θ_old exactly. (npg: s, no line search.)
4. The value function is fitted separately, n_critic_updates epochs of minibatches.
"""

from __future__ import annotations

import math

import torch

from rl_trust import natural_gradient
from rl_trust import tags as T
from rl_trust.config import TRPOConfig
from rl_trust.errors import Diverged, UserError
from rl_trust.natural_gradient import fisher_vector_product, line_search, natural_step
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.optim import Adam, flat_parameters, non_finite_grads
from rl_trust.rollout import Batch

# trpo/reject_reason: why the policy was kept (0: a step was accepted)
ACCEPTED, NO_IMPROVING_STEP, NOT_POSITIVE_CURVATURE, NON_FINITE_STEP = 0, 1, 2, 3


class TRPO:
    shares_encoder = False  # θ (the policy's parameters) and the critic's apart
    kl_target_key = "target_kl"  # δ, the constraint

    @staticmethod
    def search_space(cfg: TRPOConfig) -> dict[str, dict]:
        """`rl-trust tune`'s TRPO-own keys: δ, the CG damping and steps, critic updates."""
        return {
            "target_kl": {"loguniform": [0.003, 0.1]},
            "cg_damping": {"loguniform": [0.01, 1.0]},
            "cg_max_steps": {"int": [5, 30]},
            "n_critic_updates": {"int": [5, 30]},
        }

    def __init__(self, cfg: TRPOConfig, policy: ActorCritic, generator: torch.Generator):
        self.cfg, self.policy, self.generator = cfg, policy, generator
        if policy.shared:  # θ and the critic's parameters must be apart
            raise UserError(
                f"trpo needs separate policy and value networks, but latent_pi and latent_vf "
                f"both depend on {', '.join(policy.shared)}: use a ppo agent, or a network "
                "whose two latents share no parameter"
            )
        self.theta = flat_parameters(policy.policy_parameters())  # θ, one vector
        self.phi = flat_parameters(policy.value_parameters())  # the critic's, one vector
        self.critic_optimizer = Adam(self.phi, lr=cfg.learning_rate, eps=1e-5)  # as SB3's

    def charts(self) -> dict[str, list]:
        """TRPO's dashboard charts beside the KL ones every agent has (logging.layout)."""
        return {
            "TRPO: post-update KL against δ": [
                "Multiline",
                [T.exact(T.KL_FORWARD_MEAN, T.KL_TARGET)],
            ],
            "TRPO: expected against actual improvement": [
                "Multiline",
                [T.exact(T.TRPO_EXPECTED_IMPROVE, T.TRPO_ACTUAL_IMPROVE)],
            ],
            "TRPO: accepted steps and line-search steps": [
                "Multiline",
                [T.exact(T.TRPO_ACCEPTED, T.TRPO_LINESEARCH_STEPS)],
            ],
        }

    def constraint_kl(self, old, new):
        """Per-state KL that δ bounds: KL(π_old‖π_θ) as the paper, or reversed as sb3-contrib."""
        return self.policy.family.directed_kl(old, new, self.cfg.kl_direction)

    def update(self, batch: Batch, progress_remaining: float = 1.0) -> dict:
        """The four steps of the module's docstring; returns the update's metrics."""
        cfg = self.cfg
        adv = batch.advantages
        if cfg.normalize_advantage:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        g, Fv, loss_old = self.gradient_and_fisher(batch, adv)  # 1.
        full_step, cg = natural_step(g, Fv, cfg.target_kl, cfg.cg_max_steps, cfg.cg_tol)  # 2.
        step = self.search(batch, adv, full_step, cg["xFx"], loss_old)  # 3.
        value_loss = self.fit_critic(batch)  # 4.
        return self.update_metrics(batch, g, full_step, cg, step, loss_old.item(), value_loss)

    def dist_params(self, batch: Batch, states: slice = slice(None)):
        """The current policy's distribution parameters on the batch's `states`, masked by
        their invalid-action masks (with a graph, where gradients are enabled): the
        surrogate, the Fisher-vector products and the line search's KL all see the masked
        distributions."""
        masks = None if batch.masks is None else batch.masks[states]
        obs = batch.obs if states == slice(None) else batch.obs[states]
        return self.policy.family.masked(self.policy.dist_params(obs), masks)

    def surrogate(self, batch: Batch, adv, new):
        """L(θ) = E[r Â] for the policy whose distribution parameters are `new`."""
        return natural_gradient.surrogate(
            self.policy.family, new, batch.actions, batch.log_probs, adv
        )

    def gradient_and_fisher(self, batch: Batch, adv):
        """1. g = ∇L at θ_old, v ↦ (F + damping·I)·v there (the KL on every
        sub_sampling_factor-th state), and L(θ_old)."""
        cfg, pi = self.cfg, self.policy
        params = pi.policy_parameters()
        loss_old = self.surrogate(batch, adv, self.dist_params(batch))
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss_old, params)])
        sub = slice(None, None, cfg.sub_sampling_factor)
        kl_at_old = self.constraint_kl(batch.dist_params[sub], self.dist_params(batch, sub))
        return g, fisher_vector_product(kl_at_old.mean(), params, cfg.cg_damping), loss_old

    def search(self, batch: Batch, adv, full_step, xFx: float, loss_old) -> dict:
        """3. The backtracking line search along the full step on the exact KL and the
        surrogate (npg: the full step, unchecked); θ ends at the step taken, or at θ_old bit
        for bit. Returns the fraction taken (None: none), the tries, why none was taken,
        and the surrogate's actual gain."""
        cfg = self.cfg
        theta_old = self.theta.detach().clone()

        @torch.no_grad()
        def evaluate(fraction: float) -> tuple[float, float]:
            self.theta.copy_(theta_old + fraction * full_step)
            new = self.dist_params(batch)
            gain = float(self.surrogate(batch, adv, new) - loss_old)
            return gain, float(self.constraint_kl(batch.dist_params, new).mean())

        fraction, tries, reason = None, 0, ACCEPTED
        if xFx <= 0 or not math.isfinite(xFx):
            reason = NOT_POSITIVE_CURVATURE
        elif not bool(torch.isfinite(full_step).all()):
            reason = NON_FINITE_STEP
        elif cfg.line_search:
            shrink, tries_max = cfg.line_search_shrinking_factor, cfg.line_search_max_iter
            fraction, tries = line_search(evaluate, cfg.target_kl, shrink, tries_max)
            reason = ACCEPTED if fraction is not None else NO_IMPROVING_STEP
        else:  # natural policy gradient: the full step, unchecked
            fraction = 1.0
        actual = float("nan")
        with torch.no_grad():
            if fraction is None:
                self.theta.copy_(theta_old)  # θ stays θ_old, bit for bit
            else:
                actual = evaluate(fraction)[0]
        return {"fraction": fraction, "tries": tries, "reason": reason, "actual": actual}

    def update_metrics(self, batch, g, full_step, cg, step, loss_old: float, value_loss: float):
        """The KL statistics after the update, the trust region's decisions (trpo/*) and
        SB3's train/* tags."""
        cfg, fam = self.cfg, self.policy.family
        fraction, actual, xFx = step["fraction"], step["actual"], cg["xFx"]
        taken = fraction is not None
        expected = float(g @ full_step) if xFx > 0 else 0.0  # the linear model's gain in L
        with torch.no_grad():
            new = fam.masked(self.policy.evaluate(batch.obs)[0], batch.masks)
            metrics = fam.kl_stats(batch.dist_params, new, batch.actions, batch.log_probs)
        metrics.update(
            {
                T.KL_TARGET: cfg.target_kl,
                T.KL_TARGET_LOW: 0.0,
                T.KL_TARGET_HIGH: cfg.target_kl,
                T.TRPO_CG_ITERS: cg["cg_iters"],
                T.TRPO_CG_RESIDUAL: cg["cg_residual"],
                T.TRPO_LINESEARCH_STEPS: step["tries"],
                T.TRPO_ACCEPTED: float(taken),
                T.TRPO_REJECT_REASON: step["reason"],
                T.TRPO_STEP_FRACTION: fraction if taken else 0.0,
                T.TRPO_EXPECTED_IMPROVE: expected * (fraction if taken else 1.0),
                T.TRPO_ACTUAL_IMPROVE: actual if taken else 0.0,
                T.TRPO_STEP_NORM: float(fraction * full_step.norm()) if taken else 0.0,
                T.TRPO_XFX: xFx,
                T.TRAIN_POLICY_OBJECTIVE: loss_old + (actual if taken else 0.0),
                T.TRAIN_LINE_SEARCH_SUCCESS: float(taken),
                T.TRAIN_VALUE_LOSS: value_loss,
                T.TRAIN_ENTROPY_LOSS: -metrics[T.KL_ENTROPY],
                T.TRAIN_LEARNING_RATE: cfg.learning_rate,
            }
        )
        return metrics

    @torch.no_grad()
    def fit_critic(self, batch: Batch) -> float:
        """Minimize (V(s) − R̂)² by minibatch Adam, backpropagating ∂/∂V = 2(V − R̂)/n."""
        cfg, pi, losses = self.cfg, self.policy, []
        for _ in range(cfg.n_critic_updates):
            perm = torch.randperm(len(batch), generator=self.generator).to(self.phi.device)
            for idx in perm.split(cfg.batch_size):
                values, cache = pi.value_train(batch.obs[idx])
                error = values - batch.returns[idx]
                self.phi.grad.zero_()  # not None: the critic's .grad are views of it
                pi.backward(cache, None, error * (2 / len(idx)))
                if not torch.isfinite(self.phi.grad).all():  # stop before the step is applied
                    raise Diverged(f"non-finite critic gradient of {non_finite_grads(pi)}")
                self.critic_optimizer.step()
                losses.append(error.square().mean())
        return float(torch.stack(losses).mean())

    def state_dict(self) -> dict:
        return {"critic_optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
