#!/usr/bin/env bash
# rl-zoo3's own train.py for PPO and TRPO on Hopper, HalfCheetah and Walker2d v5 at 1M steps,
# seeds 0-2 (SEEDS=5: 0-4), the reference beside benchmarks/learning/run.sh's matrix (issue 32,
# item 2). rl-zoo3 2.9.2 (PyPI) goes in its own virtual environment, .venv-zoo (ZOO_VENV), apart
# from rl-trust's: it brings optuna, huggingface_sb3 and more. Its hyperparameter files name the
# v4 envs: train.py reads hyperparams/{ppo,trpo}.yml here (-conf), a copy of rl-zoo3's own
# entries keyed by the v5 ids, written by `zoo.py conf` and committed. zoo.py says what each run
# is given and what its row in trials/ holds (final_return as the benchmark's, eval_return
# deterministic). Rerunning skips the runs complete; a run cut short starts again (rl-zoo3 does
# not resume one). STEPS=2048 makes a smoke test (OUT elsewhere then, e.g. OUT=/tmp/zoo).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ZOO_VENV=${ZOO_VENV:-.venv-zoo}
if [ ! -x "$ZOO_VENV/bin/python" ]; then
    python3 -m venv "$ZOO_VENV"
    "$ZOO_VENV/bin/pip" install -q --upgrade pip
    "$ZOO_VENV/bin/pip" install -q torch==2.13.0  # (first: a bare torch pulls a CUDA build)
    "$ZOO_VENV/bin/pip" install -q rl_zoo3==2.9.2 "gymnasium[mujoco]>=1.4,<1.5" "tensorboard>=2.21"
fi
exec nice -n "${NICE:-19}" "$ZOO_VENV/bin/python" benchmarks/learning/rl-zoo3/zoo.py run \
    --seeds "${SEEDS:-3}" --steps "${STEPS:-1000000}" --out "${OUT:-benchmarks/learning/rl-zoo3}"
