"""Trust-region math shared by the agents: pure functions and the KL controllers (small
classes whose state goes into checkpoints), each tested against a reference."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def adapt_beta(
    beta: float, d: float, d_targ: float, band: float = 1.5, factor: float = 2.0
) -> float:
    """PPO's adaptive KL coefficient (Schulman et al. 2017, section 4), applied once per update:

        d < d_targ / 1.5  →  β ← β / 2        d > 1.5 · d_targ  →  β ← 2β

    A non-finite d leaves β as it is: it says nothing about how far the policy moved.
    """
    if not d == d or d in (float("inf"), float("-inf")):
        return beta
    if d < d_targ / band:
        return beta / factor
    if d > d_targ * band:
        return beta * factor
    return beta


class FixedBeta:
    """A KL coefficient that never moves (kl_penalty fixed, or 0 with the penalty off), and
    the interface of every controller below. Per update the agent asks `step_beta` for the β
    of each gradient step (given the running KL when `needs_running_kl`), then reports the
    update's exact mean KL d to `update`, which moves the state and returns its diagnostics
    as TensorBoard tags. `beta` is the β the next update starts from."""

    needs_running_kl = False

    def __init__(self, beta: float):
        self.beta = beta

    @classmethod
    def from_config(cls, cfg) -> FixedBeta:
        return cls(cfg.kl_beta)

    def step_beta(self, d_running: float | None = None) -> float:
        return self.beta

    def update(self, d: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = finite(state, "beta", low=0.0)


class PaperRule(FixedBeta):
    """`kl_controller=paper`: adapt_beta once per update (Schulman et al. 2017, section 4)."""

    def __init__(self, beta: float, d_targ: float, band: float = 1.5, factor: float = 2.0):
        super().__init__(beta)
        self.d_targ, self.band, self.factor = d_targ, band, factor

    @classmethod
    def from_config(cls, cfg) -> PaperRule:
        return cls(cfg.kl_beta, cfg.kl_target, cfg.kl_band, cfg.kl_factor)

    def update(self, d: float) -> dict[str, float]:
        self.beta = adapt_beta(self.beta, d, self.d_targ, self.band, self.factor)
        return {"kl/ctl_error": log_error(d, self.d_targ)}


class RLlibRule(PaperRule):
    """`kl_controller=rllib`: RLlib's PPO rule, once per update:

    d > 2·d_targ  →  β ← 1.5β        d < d_targ / 2  →  β ← β / 2
    """

    def __init__(self, beta: float, d_targ: float):
        super().__init__(beta, d_targ)

    @classmethod
    def from_config(cls, cfg) -> RLlibRule:
        return cls(cfg.kl_beta, cfg.kl_target)

    def update(self, d: float) -> dict[str, float]:
        if d > 2.0 * self.d_targ:  # NaN fails both tests and keeps β
            self.beta *= 1.5
        elif d < 0.5 * self.d_targ:
            self.beta *= 0.5
        return {"kl/ctl_error": log_error(d, self.d_targ)}


MAX_ERROR = 2.0  # |log(d / d_targ)| beyond this (a factor e² ≈ 7.4) counts as this
LOG_BETA_RANGE = (math.log(1e-4), math.log(1e4))  # the integral's anti-windup limits


def log_error(d: float, d_targ: float) -> float:
    """log(d / d_targ) clamped to ±MAX_ERROR (d ≤ 0 reads −MAX_ERROR); NaN for a NaN or
    infinite d, which says nothing about how far the policy moved."""
    if not math.isfinite(d):
        return float("nan")
    if d <= 0:
        return -MAX_ERROR
    return min(max(math.log(d / d_targ), -MAX_ERROR), MAX_ERROR)


class PIDControl(FixedBeta):
    """`kl_controller=pid`: PID control of log β, the penalty as a Lagrange multiplier
    (Stooke, Achiam & Abbeel 2020), on the error e = log(d / d_targ) (log_error):

        log β = I + D + Kp · ê                 for each gradient step of an update,
        I ← I + Ki · e,   D ← Kd · max(0, e − e_prev)        after the update,

    with e the update's exact mean KL error and ê the running one: the exact mean KL
    between the rollout policy and the current one on the minibatch about to be stepped.
    The proportional term acts within the update: while the policy is still close to the
    rollout policy (ê < 0) the penalty is light, and once the running KL passes d_targ it
    brakes at once, where the paper's rule waits for the next update. The integral I (log β₀
    at first, kept within LOG_BETA_RANGE) moves the level at which the brake holds the KL
    until the updates' KL averages d_targ; the derivative term raises β after an update
    whose KL jumped up.
    """

    needs_running_kl = True

    def __init__(self, beta: float, d_targ: float, kp: float, ki: float, kd: float):
        self.d_targ, self.kp, self.ki, self.kd = d_targ, kp, ki, kd
        self.integral, self.derivative, self.error = math.log(beta), 0.0, 0.0
        self._p_terms: list[float] = []  # this update's proportional terms, for update's tags

    @classmethod
    def from_config(cls, cfg) -> PIDControl:
        return cls(cfg.kl_beta, cfg.kl_target, cfg.kl_kp, cfg.kl_ki, cfg.kl_kd)

    @property
    def beta(self) -> float:
        return math.exp(self.integral + self.derivative)

    def step_beta(self, d_running: float | None = None) -> float:
        e = log_error(d_running, self.d_targ) if d_running is not None else float("nan")
        p = self.kp * e if e == e else 0.0  # (NaN: the integral's β)
        self._p_terms.append(p)
        return math.exp(self.integral + self.derivative + p)

    def update(self, d: float) -> dict[str, float]:
        p_terms, self._p_terms = self._p_terms or [0.0], []
        tags = {
            "kl/ctl_error": log_error(d, self.d_targ),
            "kl/ctl_p": sum(p_terms) / len(p_terms),
            "kl/ctl_p_max": max(p_terms),
            "kl/ctl_i": self.integral,
            "kl/ctl_d": self.derivative,
            "kl/beta_max": math.exp(self.integral + self.derivative + max(p_terms)),
        }  # the terms this update used, and its error
        e = tags["kl/ctl_error"]
        if e == e:  # a NaN KL leaves the state as it is
            lo, hi = LOG_BETA_RANGE
            self.integral = min(max(self.integral + self.ki * e, lo), hi)
            self.derivative = self.kd * max(0.0, e - self.error)
            self.error = e
        return tags

    def state_dict(self) -> dict:
        return {"integral": self.integral, "derivative": self.derivative, "error": self.error}

    def load_state_dict(self, state: dict) -> None:
        self.integral, self.derivative = finite(state, "integral"), finite(state, "derivative")
        self.error = finite(state, "error")


def surrogate(family, params: Tensor, actions: Tensor, log_probs: Tensor, adv: Tensor) -> Tensor:
    """The importance-weighted surrogate L = E[r Â], r = π(a|s) / π_old(a|s), for the policy
    whose distribution parameters are `params` (TRPO's objective; kl_rescale's check)."""
    return (torch.exp(family.log_prob(params, actions) - log_probs) * adv).mean()


def step_fraction(
    kl_at: Callable[[float], float],
    d: float,
    d_targ: float,
    band: float = 1.5,
    t_max: float = 2.0,
    tries: int = 4,
) -> tuple[float, float]:
    """The fraction t of an update's step θ_old + t·(θ_new − θ_old) whose mean KL lies in the
    band d_targ/band … band·d_targ, and that KL: (1, d) when the whole step's KL d is in it.

    KL(t) is modelled as KL(t₀)·(t/t₀)^k through the last point measured, with k = 2 at
    first (the KL of a small step is quadratic in it) and then the slope in log-log of the
    last two points (within 1 … 4); each try aims at d_targ and measures KL(t) with kl_at.
    t stays within (0, t_max]. Returns the first t in band, or else the last one measured
    whose KL is closest to d_targ in log (never a KL above band·d_targ when a try below it
    exists). A non-finite d gives (1, d); a try whose KL is not a positive finite number ends
    the search (and is never returned).
    """
    low, high = d_targ / band, d_targ * band
    if not math.isfinite(d) or low <= d <= high or d <= 0:
        return 1.0, d
    points = [(1.0, d)]
    k = 2.0
    for _ in range(tries):
        t0, kl0 = points[-1]
        t = min(t0 * (d_targ / kl0) ** (1.0 / k), t_max)
        if t == t0:
            break  # (at t_max, still below)
        kl = kl_at(t)
        points.append((t, kl))
        if low <= kl <= high:
            return t, kl
        if not (kl > 0 and math.isfinite(kl)):
            break  # (nothing to aim from)
        k = min(max(math.log(kl / kl0) / math.log(t / t0), 1.0), 4.0)
    tried = [(t, kl) for t, kl in points[1:] if math.isfinite(kl)]
    safe = [(t, kl) for t, kl in tried if kl <= high]
    pool = safe or tried or [(1.0, d)]
    return min(pool, key=lambda p: abs(math.log(max(p[1], 1e-12) / d_targ)))


def finite(state: dict, key: str, low: float = -math.inf) -> float:
    """A controller's saved number, or a ValueError (a checkpoint that does not fit)."""
    x = state[key]
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < low:
        raise ValueError(f"controller {key} {x!r} is not a finite number ≥ {low}")
    return float(x)


CONTROLLERS: dict[str, type[FixedBeta]] = {
    "paper": PaperRule,
    "rllib": RLlibRule,
    "pid": PIDControl,
}  # kl_controller=NAME, for kl_penalty=adaptive


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
