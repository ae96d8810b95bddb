"""The pictures of the dashboards (README.md, docs/dashboards.md): `rl-trust board` on a runs
folder, opened in headless Chromium, saved as docs/dashboard-trust-region.png and
docs/dashboard-hparams.png.

    python scripts/dashboard_screenshots.py RUNS_ROOT [--out docs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from rl_trust.board import free_port, screenshot, wait_until_up

PAGES = {
    "dashboard-trust-region.png": ("#custom_scalars", (1400, 1400)),
    "dashboard-hparams.png": ("#hparams", (1400, 520)),
}


def shoot(runs_root: Path, out: Path) -> list[Path]:
    port = free_port()
    rl_trust = str(Path(sys.executable).parent / "rl-trust")
    cmd = [rl_trust, "board", str(runs_root), "--port", str(port), "--host", "127.0.0.1"]
    board = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = board.stdout.readline().strip()
        wait_until_up(url)
        out.mkdir(parents=True, exist_ok=True)
        return [screenshot(url + page, out / name, size) for name, (page, size) in PAGES.items()]
    finally:
        board.terminate()
        board.wait(timeout=20)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs_root", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs"))
    args = p.parse_args()
    for path in shoot(args.runs_root, args.out):
        print(path)
