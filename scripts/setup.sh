#!/usr/bin/env bash
# Set up a virtual environment in .venv with rl-trust and its dependencies, then either
# train the default agent (no argument, or `--train ARGS...`) or lint, build the docs
# strictly and test (`--test [PYTEST ARGS...]`). One line per stage says what runs and how
# long it took; pip shows its progress bars on a terminal.
# torch is installed first at its pinned CPU version: letting pip choose pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:---train}"
[ $# -gt 0 ] && shift
case "$mode" in
  --test | --train) ;;
  *)
    echo "usage: scripts/setup.sh [--train [rl-trust train args] | --test [pytest args]]" >&2
    exit 2
    ;;
esac
# training needs rl-trust and the Atari extra; the tests also EnvPool, Optuna, Ray, the
# browser driver and the documentation tools (the test extra), some hundreds of MB more
if [ "$mode" = --test ]; then stages=8; extras=test; else stages=5; extras=atari; fi

stage=0
started=$SECONDS
step() {  # step "what runs now": a numbered line, and how long the stage before took
  local now=$SECONDS
  if [ "$stage" -gt 0 ]; then echo "      done in $((now - started)) s"; fi
  stage=$((stage + 1))
  started=$now
  echo "[$stage/$stages] $*"
}
# pip: quiet in a log (CI), progress bars on a terminal
if [ -t 1 ]; then pip_out=(--progress-bar on); else pip_out=(--quiet); fi
export NO_MKDOCS_2_WARNING=1  # (a notice from mkdocs-material that fails nothing)

step "creating .venv ($(python3 --version))"
python3 -m venv .venv
step "upgrading pip"
.venv/bin/pip install --quiet --upgrade pip
step "installing torch 2.13.0, its CPU build (about 200 MB; up to a minute or two)"
.venv/bin/pip install "${pip_out[@]}" torch==2.13.0
step "installing rl-trust with the '$extras' extra (the rest of its dependencies; a minute or more)"
.venv/bin/pip install "${pip_out[@]}" -e ".[$extras]"

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
      step "installing Debian's ${missing[*]} for the browser and PostgreSQL tests"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      step "Chromium and PostgreSQL: ${missing[*]:-both present}${missing[*]:+ missing, their tests will be skipped}"
    fi
    step "linting (ruff check, ruff format --check)"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    # a broken link, a page missing from the navigation or a failing docstring reference
    # fails the build (mkdocs.yml, validation:)
    step "building the documentation site strictly (mkdocs build --strict)"
    site=$(mktemp -d)
    trap 'rm -rf "$site"' EXIT
    .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
    if [ $# -eq 0 ]; then
      step "running the tests: about 15-25 minutes on 2 cores (the slow learning checks are" \
        "deselected; run them with: .venv/bin/python -m pytest -m slow)"
    else
      step "running pytest $*"
    fi
    .venv/bin/python -m pytest "$@"
    ;;
  --train)
    step "rl-trust train --agent ppo --env CartPole-v1 $* (100k steps take about 30 s on 2 cores)"
    .venv/bin/rl-trust train --agent ppo --env CartPole-v1 "$@"
    ;;
esac
