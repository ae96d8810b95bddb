#!/usr/bin/env bash
# Ours before and after a change, interleaved on one machine: `rl-trust train` at SB3's
# default PPO / TRPO settings (n_envs 1, n_steps 2048; PPO batch 64 and 10 epochs, TRPO batch
# 128 and 10 critic updates), 12 rollouts, one torch thread, three repetitions, each config
# run by BEFORE's and AFTER's venv back to back so that both meet the same machine state.
# SB3's side does not change between the two trees, so the ratio of ours is the ratio of
# scripts/bench_throughput.py's ours/SB3 ratios. Prints rep | tree | config | steps/s.
#
#   bash benchmarks/house/throughput.sh BEFORE_VENV AFTER_VENV
set -euo pipefail
before=$1 after=$2
run() {  # venv agent env --set ...
  local venv=$1 agent=$2 env=$3 d
  shift 3
  d=$(mktemp -d)
  "$venv/bin/rl-trust" train --agent "$agent" --env "$env" --set n_envs=1 --set n_steps=2048 \
      "$@" --set torch_threads=1 --steps 24576 --run-dir "$d/run" --no-progress >/dev/null 2>&1
  "$venv/bin/python" -c "import json; print(round(json.load(open('$d/run/summary.json'))['fps']))"
  rm -rf "$d"
}
for rep in 1 2 3; do
  for cfg in "ppo CartPole-v1 --set batch_size=64 --set n_epochs=10" \
             "ppo Hopper-v5 --set batch_size=64 --set n_epochs=10" \
             "trpo CartPole-v1 --set batch_size=128 --set n_critic_updates=10" \
             "trpo Hopper-v5 --set batch_size=128 --set n_critic_updates=10"; do
    for venv in "$before" "$after"; do
      # shellcheck disable=SC2086
      echo "$rep | $venv | ${cfg%% --set*} | $(run "$venv" $cfg)"
    done
  done
done
