#!/usr/bin/env bash
# The kl-control matrix (issue 19): every KL controller at one d_targ, 0.01, on every env:
# ppo-paper (the paper's rule; its per-env d_targ, Hopper 0.02 and LunarLander 0.005,
# overridden), ppo-rllib, ppo-pid, ppo-penalty (ppo-pid with the kl_rescale backstop, the
# default ppo from 2026-12-01 to 2026-12-06), ppo-reverse (ppo-penalty with the penalty's and
# the controller's KL reversed, an experiment) and ppo-clip. Trials run before 2026-12-01
# under the names ppo (the paper's rule) and ppo-pid-rescale were relabelled ppo-paper and
# ppo, and on 2026-12-06 ppo's were relabelled ppo-penalty; their configs are unchanged. The
# controllers' gains were chosen on seeds 100-102; this reports seeds 0-4 (classic) and 0-2
# (MuJoCo, 1M steps). Our agents only: SB3's clipped PPO on the same seeds is in
# benchmarks/classic and benchmarks/mujoco. Rerunning resumes from the trials already
# complete; WORKERS=N sets the trials run at once (default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
RL_TRUST=${RL_TRUST:-.venv/bin/rl-trust}
AGENTS=ppo-paper,ppo-rllib,ppo-pid,ppo-penalty,ppo-reverse,ppo-clip
COMMON=(--agents "$AGENTS" --set kl_target=0.01 --libraries rl-trust --workers "${WORKERS:-2}")
"$RL_TRUST" benchmark "${COMMON[@]}" --envs CartPole-v1,Acrobot-v1,Pendulum-v1,LunarLander-v3 \
    --seeds 5 --out benchmarks/kl-control/classic
"$RL_TRUST" benchmark "${COMMON[@]}" --envs Hopper-v5,HalfCheetah-v5,Walker2d-v5 \
    --seeds 3 --steps 1000000 --out benchmarks/kl-control/mujoco
