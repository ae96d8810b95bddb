#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU whose python3 already has torch (CUDA),
# tensorboard, opencv, pandas, matplotlib and pytest, offline. It
#   1. installs what that machine lacks from wheels brought along (scripts/device_wheels.sh
#      gathers them into .whl/ where PyPI can be reached) and rl-trust itself (editable);
#   2. runs the suite's device tests on CUDA: tests/test_devices.py (every preset on
#      device=cuda through the CLI; every tensor of an update on the GPU), test_engines.py
#      (the autograd engine on CUDA against the manual one), and the files whose tests put a
#      network on the GPU through device=auto (custom networks, API, CLI, EnvPool); --full
#      runs the whole default suite instead. One torch thread per test process
#      (OMP_NUM_THREADS=1: 14 workers of 16 threads each left the first try unfinished
#      after 8 minutes), pytest-xdist spreading the files when it is there;
#   3. times Breakout on CUDA: rl-trust sync / async / envpool against SB3's PPO CnnPolicy
#      with DummyVecEnv and SubprocVecEnv (scripts/device_bench.py);
#   4. prints one table, also written to bench/device/device_check.md (and copied with the
#      logs into $OUT when that is set, as the device tool sets it).
# Sized for 8 minutes on an H200 with 16 cores; not yet timed whole there (the first try ran
# the whole suite, too slowly: benchmarks/device/device_check.md).
#
#   bash scripts/device_check.sh [--tests-only | --bench-only] [--full] [pytest args]
#
# Everything it writes goes to bench/device/ as it goes, and into $OUT (where the device
# tool sets it) likewise, so a run cut short still returns its logs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
OUT_DIR=bench/device
mkdir -p "$OUT_DIR"
mode=all
case "${1:-}" in
  --tests-only) mode=tests; shift ;;
  --bench-only) mode=bench; shift ;;
esac
tests=(tests/test_devices.py tests/test_engines.py tests/test_custom_network.py
  tests/test_api.py tests/test_cli.py tests/test_pool.py)
if [ "${1:-}" = --full ]; then
  tests=(tests)
  shift
fi
[ -n "${OUT:-}" ] && OUT_DIR=$OUT
log() { echo "[$(date +%H:%M:%S)] device_check: $*" >&2; }

log "installing from $WHEELS"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir "$WHEELS"/*.whl || exit 1
fi
if [ -f "$WHEELS/envpool-site.zip" ]; then  # (EnvPool cut down: scripts/device_wheels.sh)
  "$PY" -c 'import shutil, sys; shutil.unpack_archive(sys.argv[1], sys.argv[2])' \
    "$WHEELS/envpool-site.zip" /tmp/envpool-site || exit 1
  export PYTHONPATH="/tmp/envpool-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .; then
  # no build backend there: rl-trust from this checkout, its console script by hand
  log "pip could not install rl-trust; using the checkout on PYTHONPATH"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  exe=$("$PY" -c 'import sys; print(sys.executable)')
  printf '#!%s\nimport sys\nfrom rl_trust.cli import main\nsys.exit(main())\n' "$exe" \
    >"$(dirname "$exe")/rl-trust"
  chmod +x "$(dirname "$exe")/rl-trust"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
"$PY" - <<'EOF' | tee "$OUT_DIR/device_check.md"
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"# device check\n\nPython {platform.python_version()}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, GPU: {gpu}\n")
EOF

status=0
if [ "$mode" != bench ]; then
  log "tests"
  xdist=()
  "$PY" -c "import xdist" 2>/dev/null && xdist=(-n "${WORKERS:-12}" --dist loadfile)
  "$PY" -m pytest -q -p no:cacheprovider -p no:benchmark "${xdist[@]}" --durations=15 \
    "$@" "${tests[@]}" 2>&1 |
    tee "$OUT_DIR/tests.log" | tail -40
  status=${PIPESTATUS[0]}
  {
    echo "## tests"
    echo
    echo "    $(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed).* =+$' "$OUT_DIR/tests.log" | tail -1)"
    echo
    grep -E '^(FAILED|ERROR) ' "$OUT_DIR/tests.log" | sed 's/^/    /'
    echo
  } >>"$OUT_DIR/device_check.md"
fi
if [ "$mode" != tests ]; then
  log "Breakout on CUDA"
  "$PY" scripts/device_bench.py --device cuda --out /tmp/device_bench >"$OUT_DIR/bench.txt" \
    2>"$OUT_DIR/bench.log"
  { echo "## speed"; echo; cat "$OUT_DIR/bench.txt"; } >>"$OUT_DIR/device_check.md"
fi
cat "$OUT_DIR/device_check.md"
exit $status
