"""Every TensorBoard tag rl-trust writes, by name, with what it means.

The agents, the loop, the dashboard layout, the benchmark and the tuner use these constants,
never the strings; `MEANINGS` is the list the docs and `tests/test_tags.py` read (a run's
event file holds no tag missing from it). Tags under `train/`, `rollout/`, `time/` and
`eval/` are stable-baselines3's names, where SB3 logs the same quantity.
"""

from __future__ import annotations

import re

MEANINGS: dict[str, str] = {}


def _tag(name: str, meaning: str) -> str:
    MEANINGS[name] = meaning
    return name


def exact(*names: str) -> str:
    """A custom-scalars Multiline pattern matching exactly these tags."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


# --- the KL between the rollout policy and the updated one, every update, every agent ---
KL_FORWARD = _tag("kl/forward", "histogram of the per-state exact KL(π_old‖π_new) of the update")
KL_FORWARD_MEAN = _tag("kl/forward_mean", "the batch's mean exact KL(π_old‖π_new)")
KL_FORWARD_P95 = _tag("kl/forward_p95", "95th percentile of the per-state KL(π_old‖π_new)")
KL_FORWARD_MAX = _tag("kl/forward_max", "largest per-state KL(π_old‖π_new)")
KL_REVERSE_MEAN = _tag("kl/reverse_mean", "the batch's mean exact KL(π_new‖π_old)")
KL_K1 = _tag("kl/k1", "sample estimator k1 = −log r of KL(π_old‖π_new)")
KL_K2 = _tag("kl/k2", "sample estimator k2 = ½(log r)²")
KL_K3 = _tag("kl/k3", "sample estimator k3 = (r − 1) − log r (SB3's approx_kl)")
KL_ENTROPY = _tag("kl/entropy", "mean entropy of π_old")
KL_CROSS_ENTROPY = _tag("kl/cross_entropy", "mean cross-entropy H(π_old, π_new)")
KL_TARGET = _tag("kl/target", "the KL the agent aims at (PPO's d_targ, TRPO's δ)")
KL_TARGET_LOW = _tag("kl/target_low", "the band's lower edge: d_targ/kl_band (PPO), 0 (TRPO)")
KL_TARGET_HIGH = _tag("kl/target_high", "the band's upper edge: kl_band·d_targ (PPO), δ (TRPO)")

# --- the adaptive penalty (PPO) ---
KL_BETA = _tag("kl/beta", "β, the KL penalty's coefficient, used in this update")
KL_PENALTY = _tag("kl/penalty", "β·KL, the penalty term of the loss (0 when β is 0)")
KL_IN_BAND = _tag("kl/in_band", "1 when the update's KL fell in the band, else 0")
KL_STEP_KL = _tag("kl/step_kl", "kl_rescale: the KL of the update's own step, before rescaling")
KL_STEP_FRACTION = _tag("kl/step_fraction", "kl_rescale: the fraction of the step kept")
KL_STATE_CAPPED = _tag(
    "kl/state_capped", "kl_state_cap: share of samples whose surrogate the per-state cap stopped"
)
KL_CTL_ERROR = _tag("kl/ctl_error", "the controller's error log(d / d_targ)")
KL_CTL_P = _tag("kl/ctl_p", "PID controller: mean proportional term of log β")
KL_CTL_P_MAX = _tag("kl/ctl_p_max", "PID controller: largest proportional term of log β")
KL_CTL_I = _tag("kl/ctl_i", "PID controller: integral term of log β")
KL_CTL_D = _tag("kl/ctl_d", "PID controller: derivative term of log β")
KL_BETA_MAX = _tag("kl/beta_max", "PID controller: the largest β its terms give")

# --- the natural step (TRPO) ---
TRPO_CG_ITERS = _tag("trpo/cg_iters", "conjugate-gradient iterations run")
TRPO_CG_RESIDUAL = _tag("trpo/cg_residual", "conjugate gradient's final residual norm")
TRPO_LINESEARCH_STEPS = _tag("trpo/linesearch_steps", "line-search tries")
TRPO_ACCEPTED = _tag("trpo/accepted", "1 when the line search accepted a step, else 0")
TRPO_REJECT_REASON = _tag(
    "trpo/reject_reason",
    "why the policy was kept: 0 a step was accepted, 1 no step improved the surrogate within "
    "δ, 2 xᵀFx ≤ 0, 3 a non-finite step",
)
TRPO_STEP_FRACTION = _tag("trpo/step_fraction", "the fraction of the full natural step taken")
TRPO_EXPECTED_IMPROVE = _tag(
    "trpo/expected_improve", "the surrogate's gain the linear model expects"
)
TRPO_ACTUAL_IMPROVE = _tag("trpo/actual_improve", "the surrogate's gain measured")
TRPO_STEP_NORM = _tag("trpo/step_norm", "the norm of the step taken in parameter space")
TRPO_XFX = _tag("trpo/xFx", "xᵀFx of conjugate gradient's solution x (the step's curvature)")

# --- SB3's names ---
TRAIN_POLICY_GRADIENT_LOSS = _tag("train/policy_gradient_loss", "the clipped or plain surrogate")
TRAIN_POLICY_OBJECTIVE = _tag("train/policy_objective", "TRPO's surrogate after the step")
TRAIN_VALUE_LOSS = _tag("train/value_loss", "the critic's squared error")
TRAIN_ENTROPY_LOSS = _tag("train/entropy_loss", "minus the mean entropy")
TRAIN_APPROX_KL = _tag("train/approx_kl", "k3 over the last epoch's minibatches (SB3's)")
TRAIN_CLIP_FRACTION = _tag("train/clip_fraction", "share of ratios outside the clip range")
TRAIN_CLIP_RANGE = _tag("train/clip_range", "the clip range ε")
TRAIN_LEARNING_RATE = _tag("train/learning_rate", "the learning rate used")
TRAIN_GRAD_STEPS = _tag("train/grad_steps", "gradient steps in this update")
TRAIN_EPOCHS = _tag("train/epochs", "epochs run (fewer when the KL stopped them)")
TRAIN_EARLY_STOPPED = _tag("train/early_stopped", "1 when target_kl stopped the epochs early")
TRAIN_N_UPDATES = _tag("train/n_updates", "gradient steps since the start")
TRAIN_LINE_SEARCH_SUCCESS = _tag("train/is_line_search_success", "TRPO: 1 when a step was taken")
TRAIN_EXPLAINED_VARIANCE = _tag("train/explained_variance", "the critic's explained variance")
TRAIN_STD = _tag("train/std", "mean standard deviation of a Gaussian policy")
ROLLOUT_EP_REW_MEAN = _tag("rollout/ep_rew_mean", "mean return of the last 100 episodes")
ROLLOUT_EP_LEN_MEAN = _tag("rollout/ep_len_mean", "mean length of the last 100 episodes")
ROLLOUT_INVALID_ACTION_SHARE = _tag(
    "rollout/invalid_action_share",
    "masked envs: the probability the unmasked policy would put on invalid actions, mean "
    "over the rollout's states (what masking saves)",
)
TIME_FPS = _tag("time/fps", "env steps per second since the start")
TIME_UPDATES = _tag("time/updates", "updates since the start")
EVAL_MEAN_REWARD = _tag("eval/mean_reward", "mean return of the periodic evaluation")
EVAL_MEAN_EP_LENGTH = _tag("eval/mean_ep_length", "mean episode length of the evaluation")
EVAL_BEST_MEAN_REWARD = _tag("eval/best_mean_reward", "the best evaluation so far")

# sb3-contrib's TRPO logs its KL under this name (read by the benchmark, never written here)
SB3_KL_DIVERGENCE_LOSS = "train/kl_divergence_loss"
