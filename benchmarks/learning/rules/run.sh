#!/usr/bin/env bash
# [learning] item 1: candidate rules for the default ppo, on the tuning seeds 100-102 only
# (held-out seeds 0-4 judge the winner later). Each variant is the preset `ppo-penalty` (the
# default ppo while the study ran; the variant named `ppo` is it) with --set values (or
# ppo-reverse); ppo-clip is the reference; ppo-cpx4-free is the rule the default ppo became on
# 2026-12-06. ORDER picks and orders the variants. MuJoCo Hopper (3 action dimensions) and HalfCheetah (6),
# where the default ppo trails ppo-clip most, at STEPS steps (default 300k); ENVS may name the
# classic envs too (CartPole-v1, Acrobot-v1, Pendulum-v1, LunarLander-v3: their presets' budgets).
# SEEDS picks the tuning seeds (default 100 101 102; the fifth pass ran LunarLander on 100-109).
#
# Every run is a run folder under OUT/runs (committed as OUT/trials: their config, summary and
# curves; `runs/` folders are ignored by git); rerun the script after an interruption: finished
# runs are skipped and a cut-off one continues from its newest checkpoint (rl-trust resume).
# `python benchmarks/learning/rules/summarize.py OUT` writes OUT/summary.md.
set -uo pipefail
RL_TRUST=${RL_TRUST:-.venv/bin/rl-trust}
OUT=${OUT:-benchmarks/learning/rules}
STEPS=${STEPS:-300000}
ENVS=${ENVS:-"Hopper-v5 HalfCheetah-v5"}
declare -A VARIANTS=(
    [ppo]="--agent ppo-penalty"
    [ppo-perdim]="--agent ppo-penalty --set kl_target_per_dim=true"  # d_targ 0.01 per dimension
    [ppo-t02]="--agent ppo-penalty --set kl_target=0.02"  # a larger target (ppo-paper's on Hopper)
    [ppo-reverse]="--agent ppo-reverse"  # the penalty on KL(π‖π_old)
    [ppo-clippen]="--agent ppo-penalty --set clip=true"  # clipping and the controlled penalty
    [ppo-clip]="--agent ppo-clip"
    # MDPO-style: d_targ annealed from 0.02 to 0.005 over the run (kl_target_final)
    [ppo-anneal]="--agent ppo-penalty --set kl_target=0.02 --set kl_target_final=0.005"
    [ppo-spread]="--agent ppo-penalty --set kl_spread=1.0"  # β·(mean KL + Var_s KL / d_targ)
    # per action dimension, growing from 0.003 to 0.012 over the run, as ppo-clip's KL per
    # update grows on the tuning seeds (Hopper and HalfCheetah: about 0.005 per dimension by 300k)
    [ppo-grow]="--agent ppo-penalty --set kl_target_per_dim=true --set kl_target=0.003 --set kl_target_final=0.012"
    # the fourth and fifth passes (docs/learning-rules.md): a trust region per state
    # (kl_state_cap, c·d_targ), how far kl_rescale may lengthen a step (kl_step_max), and
    # clipping with the penalty, per action dimension
    [ppo-cap1]="--agent ppo-penalty --set kl_state_cap=1"
    [ppo-cap15]="--agent ppo-penalty --set kl_state_cap=1.5"
    [ppo-cap2]="--agent ppo-penalty --set kl_state_cap=2"
    [ppo-cap4]="--agent ppo-penalty --set kl_state_cap=4"
    [ppo-cap1-x4]="--agent ppo-penalty --set kl_state_cap=1 --set kl_step_max=4"
    [ppo-perdim-cap1]="--agent ppo-penalty --set kl_target_per_dim=true --set kl_state_cap=1"
    [ppo-reverse-cap1]="--agent ppo-reverse --set kl_state_cap=1"
    [ppo-cap2-spread]="--agent ppo-penalty --set kl_state_cap=2 --set kl_spread=1.0"
    [ppo-anneal-cap1]="--agent ppo-penalty --set kl_target=0.02 --set kl_target_final=0.005 --set kl_state_cap=1"
    [ppo-clippen-perdim]="--agent ppo-penalty --set clip=true --set kl_target_per_dim=true"
    [ppo-clippen-x4]="--agent ppo-penalty --set clip=true --set kl_step_max=4"
    [ppo-clippen-perdim-x4]="--agent ppo-penalty --set clip=true --set kl_target_per_dim=true --set kl_step_max=4"
    [ppo-cpx4-free]="--agent ppo-penalty --set clip=true --set kl_target_per_dim=true --set kl_step_max=4 --set kl_lengthen_check=false"
)
ORDER=${ORDER:-"ppo-perdim ppo ppo-clip ppo-t02 ppo-reverse ppo-clippen"}
# the classic envs at their presets' budgets (as the benchmark runs them); MuJoCo at STEPS
steps_of() {
  case "$1" in
    CartPole-v1 | Pendulum-v1) echo 100000 ;;
    Acrobot-v1 | LunarLander-v3) echo 1000000 ;;
    *) echo "$STEPS" ;;
  esac
}
mkdir -p "$OUT/runs"
for seed in ${SEEDS:-100 101 102}; do
  for env in $ENVS; do
    steps=$(steps_of "$env")
    for name in $ORDER; do
      # every classic env has one action dimension, where a target per dimension is ppo's
      case "$name $env" in "ppo-perdim "*-v[0-4]) continue ;; esac  # (classic: v0-v4; MuJoCo: v5)
      dir="$OUT/runs/$name-$env-s$seed"
      if [ -f "$dir/summary.json" ] && python3 -c "import json,sys; sys.exit(json.load(open('$dir/summary.json'))['steps'] < $steps)"; then
        continue
      fi
      echo "$(date +%H:%M:%S) $name $env seed $seed" >&2
      if [ -d "$dir/checkpoints" ]; then
        "$RL_TRUST" resume "$dir" --steps "$steps" --no-progress >> "$OUT/log.txt" 2>&1
      else
        rm -rf "$dir"
        # shellcheck disable=SC2086
        "$RL_TRUST" train ${VARIANTS[$name]} --env "$env" --seed "$seed" --steps "$steps" \
            --run-dir "$dir" --set checkpoint_every=50000 --no-progress >> "$OUT/log.txt" 2>&1
      fi || { s=$?; [ "$s" -ge 128 ] && exit "$s"; echo "$name $env $seed: exit $s" >&2; }
    done
  done
done
