#!/usr/bin/env bash
# Set up a virtual environment in .venv with rl-trust and its dependencies, then either
# train the default agent (no argument, or `--train ARGS...`) or lint and test (`--test`).
# torch is installed first at its pinned CPU version: letting pip choose pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.13.0
mode="${1:---train}"
[ $# -gt 0 ] && shift
# training needs rl-trust and the Atari extra; the tests also EnvPool, Optuna, Ray and the
# browser driver (the test extra), some hundreds of MB more
if [ "$mode" = --test ]; then extras=test; else extras=atari; fi
.venv/bin/pip install --quiet -e ".[$extras]"
case "$mode" in
  --test)
    # The browser test (tests/test_board.py) needs Chromium, and the shared-study test of
    # rl-trust tune (tests/test_tune.py) a PostgreSQL server: install Debian's where we can
    # (root, with apt-get); elsewhere those tests are skipped and say why.
    missing=()
    if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
      missing+=(chromium)
    fi
    if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
      missing+=(postgresql)
    fi
    if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
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
