"""KL control: what moves PPO's penalty coefficient β so that the KL between successive
policies holds a target, and the band it is held in. Small classes whose state goes into
checkpoints, built from numbers (agents/ppo.py reads them from its config), each tested
against a reference (tests/test_kl_control.py, tests/test_agents.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rl_trust import tags as T


@dataclass(frozen=True)
class KLBand:
    """The band d_targ/width … width·d_targ that a controlled KL is held in (the PPO paper's
    1.5), as the controllers, kl_rescale, the update's tags and the benchmark report read it."""

    target: float
    width: float = 1.5

    @property
    def low(self) -> float:
        return self.target / self.width

    @property
    def high(self) -> float:
        return self.target * self.width

    def contains(self, d: float) -> bool:
        return self.low <= d <= self.high


def adapt_beta(
    beta: float, d: float, d_targ: float, band: float = 1.5, factor: float = 2.0
) -> float:
    """PPO's adaptive KL coefficient (Schulman et al. 2017, section 4), applied once per update:

        d < d_targ / 1.5  →  β ← β / 2        d > 1.5 · d_targ  →  β ← 2β

    A non-finite d leaves β as it is: it says nothing about how far the policy moved.
    """
    held = KLBand(d_targ, band)
    if not d == d or d in (float("inf"), float("-inf")):
        return beta
    if d < held.low:
        return beta / factor
    if d > held.high:
        return beta * factor
    return beta


class FixedBeta:
    """A KL coefficient that never moves (kl_penalty fixed, or 0 with the penalty off), and
    the interface of every controller below. Per update the agent asks `step_beta` for the β
    of each gradient step (given the running KL when `needs_running_kl`), then reports the
    update's exact mean KL d to `update`, which moves the state and returns its diagnostics
    as TensorBoard tags. `beta` is the β the next update starts from."""

    needs_running_kl = False
    d_targ: float | None = None  # the KL held (None: none); the agent may move it per update

    def __init__(self, beta: float):
        self.beta = beta

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

    def update(self, d: float) -> dict[str, float]:
        self.beta = adapt_beta(self.beta, d, self.d_targ, self.band, self.factor)
        return {T.KL_CTL_ERROR: log_error(d, self.d_targ)}


class RLlibRule(PaperRule):
    """`kl_controller=rllib`: RLlib's PPO rule, once per update, with its numbers as the
    defaults (band 2, up 1.5, down 0.5):

    d > band·d_targ  →  β ← up·β        d < d_targ / band  →  β ← down·β
    """

    def __init__(
        self, beta: float, d_targ: float, band: float = 2.0, up: float = 1.5, down: float = 0.5
    ):
        super().__init__(beta, d_targ, band)
        self.up, self.down = up, down

    def update(self, d: float) -> dict[str, float]:
        held = KLBand(self.d_targ, self.band)
        if d > held.high:  # NaN fails both tests and keeps β
            self.beta *= self.up
        elif d < held.low:
            self.beta *= self.down
        return {T.KL_CTL_ERROR: log_error(d, self.d_targ)}


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
            T.KL_CTL_ERROR: log_error(d, self.d_targ),
            T.KL_CTL_P: sum(p_terms) / len(p_terms),
            T.KL_CTL_P_MAX: max(p_terms),
            T.KL_CTL_I: self.integral,
            T.KL_CTL_D: self.derivative,
            T.KL_BETA_MAX: math.exp(self.integral + self.derivative + max(p_terms)),
        }  # the terms this update used, and its error
        e = tags[T.KL_CTL_ERROR]
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


def finite(state: dict, key: str, low: float = -math.inf) -> float:
    """A controller's saved number, or a ValueError (a checkpoint that does not fit)."""
    x = state[key]
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < low:
        raise ValueError(f"controller {key} {x!r} is not a finite number ≥ {low}")
    return float(x)


CONTROLLERS: dict[str, type[FixedBeta]] = {
    "paper": PaperRule,  # (β₀, d_targ, band, factor)
    "rllib": RLlibRule,  # (β₀, d_targ)
    "pid": PIDControl,  # (β₀, d_targ, kp, ki, kd)
}  # kl_controller=NAME, for kl_penalty=adaptive


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
    held = KLBand(d_targ, band)
    high = held.high
    if not math.isfinite(d) or held.contains(d) or d <= 0:
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
        if held.contains(kl):
            return t, kl
        if not (kl > 0 and math.isfinite(kl)):
            break  # (nothing to aim from)
        k = min(max(math.log(kl / kl0) / math.log(t / t0), 1.0), 4.0)
    tried = [(t, kl) for t, kl in points[1:] if math.isfinite(kl)]
    safe = [(t, kl) for t, kl in tried if kl <= high]
    pool = safe or tried or [(1.0, d)]
    return min(pool, key=lambda p: abs(math.log(max(p[1], 1e-12) / d_targ)))
