"""Proximal Policy Optimization (Schulman et al. 2017), every variant of sections 3 and 4.

Over n_epochs of minibatches, maximize

    L(θ) = E[ min(r Â, clip(r, 1−ε, 1+ε) Â) ]  (or E[r Â] without clipping)
           − β · KL(π_old ‖ π_θ)                  (the penalty; or KL(π_θ ‖ π_old) reversed)
           − c₁ (V_θ(s) − R̂)² + c₂ H(π_θ)

with r = π_θ(a|s) / π_old(a|s). After the update, with d the batch's mean exact KL in the
penalty's direction, the adaptive rule moves β once (kl_control.adapt_beta; kl_controller
picks another controller from kl_control.CONTROLLERS, which may also set β per gradient
step from the running KL). With target_kl, a minibatch whose estimated KL (k3) exceeds
1.5·target_kl stops the update before its gradient step, as stable-baselines3 does.
With kl_rescale, the policy's step θ − θ_old is then scaled to θ_old + t·(θ − θ_old), t
from kl_control.step_fraction, so that d lands in the band d_targ/1.5 … 1.5·d_targ.

Two variants of the penalty term: with kl_spread κ > 0 it is β·(KL̄ + κ·Var_s[KL_s]/d_targ)
over a minibatch's states, which weighs the states whose KL runs ahead of the mean more; with
kl_target_final, d_targ moves linearly from kl_target to it over training (MDPO's annealed
step, Tomar et al. 2022, as a target the controller holds).

A per-state trust region (kl_state_cap c, after Wang et al. 2019's trust-region PPO): a
sample's surrogate term is held constant, passing no gradient, once its state's KL_s (in the
penalty's direction) exceeds c·d_targ and its ratio has already moved the way its advantage
pushes, (r − 1)·Â > 0. Clipping bounds each ratio; this bounds each state's KL.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rl_trust import divergence, kl_control, natural_gradient
from rl_trust import tags as T
from rl_trust.config import PPOConfig
from rl_trust.errors import Diverged
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.optim import Adam, flat_parameters, non_finite_grads
from rl_trust.rollout import Batch, normalize_per_minibatch

CONTROLLER_TAGS = (T.KL_CTL_ERROR, T.KL_CTL_P, T.KL_CTL_P_MAX, T.KL_CTL_I, T.KL_CTL_D)


class PPO:
    shares_encoder = True  # one image/Dict encoder for policy and value, as SB3's CnnPolicy
    kl_target_key = "kl_target"  # d_targ, the penalty's target

    @staticmethod
    def search_space(cfg: PPOConfig) -> dict[str, dict]:
        """`rl-trust tune`'s PPO-own keys (beside the rollout ones every agent has): epochs
        and entropy, and as the preset uses them the KL target, the PID gains, the clip."""
        space: dict[str, dict] = {
            "n_epochs": {"categorical": [5, 10, 20]},
            "ent_coef": {"loguniform": [1e-8, 1e-2]},
        }
        if cfg.kl_penalty != "off":
            space["kl_target"] = {"loguniform": [0.003, 0.05]}
        if cfg.kl_penalty == "adaptive" and cfg.kl_controller == "pid":
            space.update(
                kl_kp={"uniform": [0.5, 8.0]},
                kl_ki={"uniform": [0.05, 2.0]},
                kl_kd={"uniform": [0.0, 2.0]},
            )
        if cfg.clip:
            space["clip_range"] = {"categorical": [0.1, 0.2, 0.3]}
        return space

    def __init__(self, cfg: PPOConfig, policy: ActorCritic, generator: torch.Generator):
        self.cfg, self.policy, self.generator = cfg, policy, generator
        self.weights = flat_parameters(list(policy.parameters()))  # policy and value, one vector
        self.optimizer = Adam(self.weights, lr=cfg.learning_rate, eps=1e-5)
        # d_targ: the KL the penalty holds (per action dimension: times the dimensions)
        self.dims = policy.family.action_dim if cfg.kl_target_per_dim else 1
        self.d_targ = cfg.kl_target * self.dims
        self.controller = kl_controller(cfg, self.d_targ)
        self.beta = self.controller.beta  # the β of the current gradient step
        self.clip_range = cfg.clip_range  # ε of the current update (clip_range_schedule)
        self.grad_steps = 0
        if cfg.kl_rescale:  # the part of `weights` that kl_rescale scales
            in_policy = {id(p) for p in policy.policy_parameters()}
            self.policy_part = torch.cat(
                [torch.full((p.numel(),), id(p) in in_policy) for p in policy.parameters()]
            ).to(self.weights.device)

    def charts(self) -> dict[str, list]:
        """PPO's dashboard charts beside the KL ones every agent has (logging.layout)."""
        w = f"{self.cfg.kl_band:g}"
        return {
            "β, the penalty coefficient": ["Multiline", [T.exact(T.KL_BETA, T.KL_BETA_MAX)]],
            f"KL in the band d_targ/{w} … {w}·d_targ: 1 in, 0 out": [
                "Multiline",
                [T.exact(T.KL_IN_BAND)],
            ],
            "KL controller: log error and the P, I, D terms of log β": [
                "Multiline",
                [T.exact(*CONTROLLER_TAGS)],
            ],
            "kl_rescale: the step's own KL and the fraction of it kept": [
                "Multiline",
                [T.exact(T.KL_STEP_KL, T.KL_STEP_FRACTION)],
            ],
        }

    def dist_params(self, batch: Batch) -> Tensor:
        """The current policy's distribution on the whole batch (masked by its masks)."""
        return self.policy.family.masked(self.policy.evaluate(batch.obs)[0], batch.masks)

    def penalty_kl(self, old: Tensor, new: Tensor) -> Tensor:
        """Per-state KL in the penalty's direction."""
        return self.policy.family.directed_kl(old, new, self.cfg.kl_direction)

    def objective(self, mb: Batch, params: Tensor, values: Tensor) -> dict[str, Tensor]:
        """The terms of L on minibatch mb, where the networks output distribution parameters
        `params` and `values`."""
        cfg, fam, eps = self.cfg, self.policy.family, self.clip_range
        log_ratio = fam.log_prob(params, mb.actions) - mb.log_probs
        ratio = log_ratio.exp()
        surrogate = ratio * mb.advantages
        if cfg.clip:
            surrogate = torch.min(surrogate, ratio.clamp(1 - eps, 1 + eps) * mb.advantages)
        kl = self.penalty_kl(mb.dist_params, params)
        capped = self.capped(kl.detach(), ratio.detach(), mb.advantages)
        surrogate = torch.where(capped, surrogate.detach(), surrogate)
        return {
            "pg": -surrogate.mean(),
            "vf": F.mse_loss(mb.returns, self.clipped_values(mb, values)),
            "entropy": fam.entropy(params).mean(),
            "penalty": self.penalty(kl),
            "approx_kl": divergence.k3(log_ratio).mean(),
            "clip_fraction": ((ratio - 1).abs() > eps).float().mean(),
            "capped": capped.float().mean(),
        }

    def capped(self, kl: Tensor, ratio: Tensor, advantages: Tensor) -> Tensor:
        """kl_state_cap: the samples whose state's KL passed c·d_targ while their ratio moved
        the way their advantage pushes (all False without a cap)."""
        if self.cfg.kl_state_cap is None:
            return torch.zeros_like(kl, dtype=torch.bool)
        return (kl > self.cfg.kl_state_cap * self.d_targ) & ((ratio - 1) * advantages > 0)

    def penalty(self, kl: Tensor) -> Tensor:
        """The penalty's KL term from the per-state KLs: their mean, plus κ·Var/d_targ."""
        if not self.cfg.kl_spread:
            return kl.mean()
        return kl.mean() + self.cfg.kl_spread * kl.var(unbiased=False) / self.d_targ

    def loss(self, terms: dict[str, Tensor]) -> Tensor:
        c = self.cfg
        return (
            terms["pg"]
            + c.vf_coef * terms["vf"]
            - c.ent_coef * terms["entropy"]
            + (self.beta * terms["penalty"] if self.beta > 0 else 0.0)
        )

    def clipped_values(self, mb: Batch, values: Tensor) -> Tensor:
        if self.cfg.clip_range_vf is None:
            return values
        c = self.cfg.clip_range_vf
        return mb.values + (values - mb.values).clamp(-c, c)

    def gradient(self, mb: Batch, params: Tensor, values: Tensor, log_ratio: Tensor):
        """∂L/∂params and ∂L/∂values per state: the derivative of loss(objective) in closed
        form, so no autograd graph is built per minibatch (tests compare the two). With
        invalid-action masks, `params` are the masked distribution's and the derivative is
        carried back to the network's outputs (family.masked_grad)."""
        cfg, fam, eps, n = self.cfg, self.policy.family, self.clip_range, len(mb)
        ratio, adv = log_ratio.exp(), mb.advantages
        weight = ratio * adv  # ∂(r Â)/∂log π
        if cfg.clip:  # only where the unclipped term is the min does r carry a gradient
            weight = weight * (weight <= ratio.clamp(1 - eps, 1 + eps) * adv)
        kl = None  # per-state KL, when the cap or the spread needs it
        if cfg.kl_state_cap is not None or (cfg.kl_spread and self.beta > 0):
            kl = self.penalty_kl(mb.dist_params, params)
        if cfg.kl_state_cap is not None:  # a capped sample's term is constant
            weight = weight * ~self.capped(kl, ratio, adv)
        d_params = fam.log_prob_grad(params, mb.actions).mul_(weight.unsqueeze(-1) / -n)
        if self.beta > 0:
            reverse = cfg.kl_direction == "reverse"
            d_kl = fam.kl_grad(mb.dist_params, params, reverse)
            if cfg.kl_spread:  # ∂(KL̄ + κ·Var/d_targ)/∂KL_s = (1 + 2κ(KL_s − KL̄)/d_targ)/n
                d_kl.mul_((kl - kl.mean()).mul_(2 * cfg.kl_spread / self.d_targ).add_(1)[:, None])
            d_params.add_(d_kl, alpha=self.beta / n)
        if cfg.ent_coef:
            d_params.add_(fam.entropy_grad(params), alpha=-cfg.ent_coef / n)
        d_values = (self.clipped_values(mb, values) - mb.returns).mul_(2 * cfg.vf_coef / n)
        if cfg.clip_range_vf is not None:  # the clamp passes no gradient outside its band
            d_values.mul_((values - mb.values).abs() <= cfg.clip_range_vf)
        return fam.masked_grad(d_params, mb.masks), d_values

    @torch.no_grad()
    def update(self, batch: Batch, progress_remaining: float = 1.0) -> dict:
        """n_epochs over shuffled minibatches (or until target_kl stops them), then β moves
        once on the batch's exact mean KL; returns the update's metrics."""
        lr = self.set_schedules(progress_remaining)
        beta_used = self.controller.beta  # this update's β (before any per-step brake)
        start = self.weights.detach().clone() if self.cfg.kl_rescale else None
        stepped, last_epoch, stopped = self.epochs(batch)
        terms = self.stepped_terms(stepped, last_epoch)
        if start is not None:
            new, rescale = self.rescale_step(batch, start)
        else:
            new, rescale = self.dist_params(batch), {}
        metrics = self.policy.family.kl_stats(
            batch.dist_params, new, batch.actions, batch.log_probs
        )
        d = metrics[T.KL_FORWARD_MEAN if self.cfg.kl_direction == "forward" else T.KL_REVERSE_MEAN]
        metrics.update(rescale)
        control = self.controller.update(rescale.get(T.KL_STEP_KL, d))  # (the step's own KL)
        self.beta = self.controller.beta
        metrics.update(self.update_metrics(batch, terms, d, beta_used, lr, len(stepped), stopped))
        metrics.update(control)
        return metrics

    def rescale_step(self, batch: Batch, start: Tensor) -> tuple[Tensor, dict[str, float]]:
        """kl_rescale: the policy's part of the update's step Δ = θ − θ_start scaled by the
        t of kl_control.step_fraction, so the batch's exact mean KL lands in the band: a
        backstop behind the controller, which still sees the step's own KL. A t above 1
        (a step whose KL fell below the band, lengthened up to kl_step_max) is kept only if
        the surrogate mean(r·Â) on the batch is no lower there than at t = 1 (always, without
        kl_lengthen_check). The policy's part is every weight the distribution depends on:
        with a shared encoder, the encoder's too. Returns the distribution parameters on the
        batch at the t kept (each t is evaluated once) and the tags."""
        cfg, fam, end = self.cfg, self.policy.family, self.weights.detach().clone()
        step = (end - start).mul_(self.policy_part)

        def move_to(t: float) -> None:  # the policy at θ_start + t·Δ (the critic at its end)
            self.weights.data.copy_(end).sub_(step, alpha=1.0 - t)

        params = {1.0: self.dist_params(batch)}  # by t, as measured

        def kl_at(t: float) -> float:
            move_to(t)
            params[t] = self.dist_params(batch)
            return self.penalty_kl(batch.dist_params, params[t]).mean().item()

        def surrogate(t: float) -> float:
            args = (batch.actions, batch.log_probs, batch.advantages)
            return natural_gradient.surrogate(fam, params[t], *args).item()

        d = self.penalty_kl(batch.dist_params, params[1.0]).mean().item()
        t, _ = kl_control.step_fraction(kl_at, d, self.d_targ, cfg.kl_band, cfg.kl_step_max)
        if t > 1.0 and cfg.kl_lengthen_check and surrogate(t) < surrogate(1.0):
            t = 1.0
        move_to(t)
        return params[t], {T.KL_STEP_FRACTION: t, T.KL_STEP_KL: d}

    def set_schedules(self, progress_remaining: float) -> float:
        """The learning rate and ε of this update (constant, or linear in the progress left,
        as SB3's schedules); returns the learning rate."""
        cfg = self.cfg
        lr = cfg.learning_rate * (progress_remaining if cfg.lr_schedule == "linear" else 1.0)
        self.optimizer.lr = lr
        linear_clip = cfg.clip_range_schedule == "linear"
        self.clip_range = cfg.clip_range * (progress_remaining if linear_clip else 1.0)
        if cfg.kl_target_final is not None:  # d_targ from kl_target to kl_target_final
            start, end = cfg.kl_target, cfg.kl_target_final
            self.d_targ = (end + (start - end) * progress_remaining) * self.dims
            self.controller.d_targ = self.d_targ
        return lr

    def epochs(self, batch: Batch):
        """The gradient steps. Returns what each saw before it stepped (minibatch less its
        observations, params, values), the log-ratios of the last epoch's minibatches (the
        stopping one included) and whether target_kl stopped the update."""
        cfg, pi, fam = self.cfg, self.policy, self.policy.family
        stepped: list[tuple[Batch, Tensor, Tensor]] = []
        last_epoch: list[Tensor] = []
        for _ in range(cfg.n_epochs):
            last_epoch = []  # SB3 logs approx_kl of the last epoch only
            epoch = batch.shuffled(self.generator)
            if cfg.normalize_advantage:
                epoch.advantages = normalize_per_minibatch(epoch.advantages, cfg.batch_size)
            for mb in epoch.minibatches(cfg.batch_size):
                params, values, cache = pi.forward_train(mb.obs)
                params = fam.masked(params, mb.masks)  # (params itself when unmasked)
                log_ratio = fam.log_prob(params, mb.actions) - mb.log_probs
                last_epoch.append(log_ratio)
                if cfg.target_kl is not None:
                    if divergence.k3(log_ratio).mean().item() > 1.5 * cfg.target_kl:
                        return stepped, last_epoch, True  # before this minibatch's step
                d_running = None  # the KL so far, on this minibatch, for a responsive β
                if self.controller.needs_running_kl:
                    d_running = self.penalty_kl(mb.dist_params, params).mean().item()
                self.beta = self.controller.step_beta(d_running)
                self.gradient_step(
                    cache, self.gradient(mb, params, values, log_ratio), len(stepped)
                )
                stepped.append((mb.without_obs(), params, values))
        return stepped, last_epoch, False

    def gradient_step(self, cache, grads: tuple[Tensor, Tensor], in_update: int) -> None:
        """One Adam step on ∂L/∂(every weight), found from ∂L/∂(params, values) by the
        policy's engine, its global norm clipped to max_grad_norm as clip_grad_norm_."""
        self.weights.grad.zero_()
        self.policy.backward(cache, *grads)
        grad_norm = self.weights.grad.norm()
        if not torch.isfinite(grad_norm):  # stop before the step is applied
            raise Diverged(
                f"non-finite gradient of {non_finite_grads(self.policy)} at gradient step "
                f"{self.grad_steps + 1} (minibatch {in_update + 1} of this update)"
            )
        self.weights.grad.mul_((self.cfg.max_grad_norm / (grad_norm + 1e-6)).clamp(max=1.0))
        self.optimizer.step()
        self.grad_steps += 1

    def stepped_terms(self, stepped: list, last_epoch: list[Tensor]) -> dict[str, float]:
        """The objective's terms over every sample the gradient steps used, as each saw it
        before its step; approx_kl: k3 per minibatch of the last epoch, averaged (as SB3)."""
        terms = {"pg": 0.0, "vf": 0.0, "entropy": 0.0, "penalty": 0.0}
        terms.update(approx_kl=0.0, clip_fraction=0.0, capped=0.0)
        if stepped:
            mbs, params, values = zip(*stepped, strict=True)
            terms = self.objective(Batch.cat(mbs), torch.cat(params), torch.cat(values))
            terms = {k: v.item() for k, v in terms.items()}
        if last_epoch:
            k3 = [divergence.k3(r).mean() for r in last_epoch]
            terms["approx_kl"] = torch.stack(k3).mean().item()
        return terms

    def update_metrics(
        self,
        batch: Batch,
        terms: dict,
        d: float,
        beta_used: float,
        lr: float,
        steps: int,
        stopped: bool,
    ) -> dict[str, float]:
        """The update's train/* tags (SB3's names) and the penalty's kl/* tags, d being the
        batch's exact mean KL in the penalty's direction."""
        cfg = self.cfg
        band = kl_control.KLBand(self.d_targ, cfg.kl_band)
        return {
            T.KL_BETA: beta_used,
            T.KL_IN_BAND: float(band.contains(d)),
            T.KL_TARGET: self.d_targ,
            T.KL_TARGET_LOW: band.low,
            T.KL_TARGET_HIGH: band.high,
            T.KL_PENALTY: terms["penalty"] if beta_used > 0 else 0.0,
            T.TRAIN_POLICY_GRADIENT_LOSS: terms["pg"],
            T.TRAIN_VALUE_LOSS: terms["vf"],
            T.TRAIN_ENTROPY_LOSS: -terms["entropy"],
            T.TRAIN_APPROX_KL: terms["approx_kl"],
            T.TRAIN_CLIP_FRACTION: terms["clip_fraction"],
            **({T.KL_STATE_CAPPED: terms["capped"]} if cfg.kl_state_cap is not None else {}),
            T.TRAIN_LEARNING_RATE: lr,
            T.TRAIN_CLIP_RANGE: self.clip_range,
            T.TRAIN_GRAD_STEPS: steps,
            T.TRAIN_EPOCHS: steps / -(-len(batch) // cfg.batch_size),
            T.TRAIN_EARLY_STOPPED: float(stopped),
            T.TRAIN_N_UPDATES: self.grad_steps,
        }

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "beta": self.beta,
            "controller": self.controller.state_dict(),
            "grad_steps": self.grad_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        beta, grad_steps = state["beta"], state["grad_steps"]
        if not (isinstance(beta, float | int) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta {beta!r} is not a number ≥ 0")
        if not (isinstance(grad_steps, int) and grad_steps >= 0):
            raise ValueError(f"grad_steps {grad_steps!r} is not an integer ≥ 0")
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state.get("controller", {"beta": state["beta"]}))
        self.beta, self.grad_steps = self.controller.beta, grad_steps


def kl_controller(cfg: PPOConfig, d_targ: float) -> kl_control.FixedBeta:
    """What moves β: nothing with a fixed penalty (β 0 without one), else cfg.kl_controller,
    built from the config's numbers, holding the KL at d_targ."""
    if cfg.kl_penalty != "adaptive":
        return kl_control.FixedBeta(cfg.kl_beta if cfg.kl_penalty == "fixed" else 0.0)
    gains = {
        "paper": (cfg.kl_band, cfg.kl_factor),
        "rllib": (),
        "pid": (cfg.kl_kp, cfg.kl_ki, cfg.kl_kd),
    }[cfg.kl_controller]
    return kl_control.CONTROLLERS[cfg.kl_controller](cfg.kl_beta, d_targ, *gains)
