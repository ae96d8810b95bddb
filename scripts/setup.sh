#!/usr/bin/env bash
# Set up a virtual environment in .venv with rl-trust and its dependencies, then either
# train the default agent (no argument, or `--train ARGS...`) or lint and test (`--test`).
# torch is installed first at its pinned CPU version: letting pip choose pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e ".[test]"
mode="${1:---train}"
[ $# -gt 0 ] && shift
case "$mode" in
  --test)
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/python -m pytest "$@"
    ;;
  --train)
    .venv/bin/rl-trust train --agent ppo --env CartPole-v1 "$@"
    ;;
  *)
    echo "usage: scripts/setup.sh [--train [rl-trust train args] | --test [pytest args]]" >&2
    exit 2
    ;;
esac
