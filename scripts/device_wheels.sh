#!/usr/bin/env bash
# Gathers, on a machine that reaches PyPI, what scripts/device_check.sh installs on a GPU
# machine that has torch, tensorboard and opencv but no network: wheels for CPython 3.12
# (manylinux x86_64) of gymnasium, ale-py, Box2D, MuJoCo, stable-baselines3 and sb3-contrib,
# and EnvPool cut down to its Atari simulator and the Breakout and Pong ROMs (its full wheels
# are 53 MB and 92 MB of other suites' simulators and assets; a device call carries 64 MiB).
#
#   bash scripts/device_wheels.sh [DEST]     (default .whl, which git ignores locally:
#                                            echo /.whl/ >> .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
get() {
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$1" "${@:2}"
}
# the versions this project pins or runs (pyproject.toml; mujoco without mujoco-studio, its
# viewer, which `import mujoco` does not need); their own needs that the GPU
# image lacks (farama-notifications, glfw, pyopengl, dm-env, dm-tree, optree); the test
# suite's websocket-client (tests/cdp.py)
get "$DEST" gymnasium==1.4.0 farama-notifications==0.0.6 ale-py==0.12.1 box2d==2.3.10 \
  mujoco==4.0.1 mujoco-core==4.0.1 glfw==2.11.0 pyopengl==3.1.10 \
  stable-baselines3==2.9.2 sb3-contrib==2.9.2 dm-env==1.6 dm-tree==0.1.10 optree==0.20.0 \
  websocket-client==1.9.2
# EnvPool, as DEST/envpool-site.zip (device_check.sh unpacks it and puts it on PYTHONPATH;
# not a wheel: its package is changed, below): its Python, its bundled
# libraries and the Atari simulator (`import envpool` registering only Atari's tasks); the
# ROMs of Breakout and Pong from its assets
full=$(mktemp -d)
trap 'rm -rf "$full"' EXIT
get "$full" envpool==1.2.5 envpool-assets==0.3.0
"$PY" - "$full" "$DEST/envpool-site.zip" <<'EOF'
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

full, out = Path(sys.argv[1]), Path(sys.argv[2])
site = Path(tempfile.mkdtemp())
ROMS = ("envpool_assets/atari/roms/breakout.bin", "envpool_assets/atari/roms/pong.bin")
for wheel in full.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("envpool_assets/"):
                keep = name in ROMS or name == "envpool_assets/__init__.py"
            else:  # envpool: all but the other suites' simulators and binaries
                heavy = name.endswith(".so") or "/bin/" in name or "/assets/" in name
                keep = not heavy or name.startswith(("envpool/atari/", "envpool.libs/"))
            if keep:
                z.extract(name, site)
# what `import envpool` registers: the Atari tasks alone (each suite's package loads its
# simulator when imported)
(site / "envpool" / "entry.py").write_text("import envpool.atari.registration  # noqa: F401\n")
shutil.make_archive(str(out.with_suffix("")), "zip", site)
shutil.rmtree(site)
EOF
du -sh "$DEST"
