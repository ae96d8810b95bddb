#!/usr/bin/env bash
# The image benchmark (issue [networks]): ppo-clip with the ALE/Breakout-v5 preset (84×84
# grey, frame skip 4, 4 stacked frames; rl-baselines3-zoo's Atari PPO hyperparameters with
# their linear schedules, here over 500k steps) against SB3's PPO CnnPolicy at the same
# settings, seeds 0 and 1. Ours computes the Nature CNN in mixed bfloat16
# (precision=bfloat16; SB3 in float32: the report lists it under caveats). A trial cut short
# continues from its own last checkpoint (every 50k steps) when this is run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
RL_TRUST=${RL_TRUST:-.venv/bin/rl-trust}
"$RL_TRUST" benchmark --agents ppo-clip --envs ALE/Breakout-v5 --seeds 2 --steps 500000 \
    --set precision=bfloat16 --workers "${WORKERS:-2}" --out benchmarks/atari
