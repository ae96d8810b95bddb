"""`rl-trust board`: TensorBoard's own server on a runs folder, and what checks it.

The server runs as a child process (`python -m tensorboard.main`); `serve` refuses a folder
without runs and a busy port before starting it, and stops it on Ctrl-C or SIGTERM.
`wait_until_up` is how the tests wait for it; `screenshot` takes the dashboard pictures
of docs/dashboards.md (scripts/dashboard_screenshots.py).
"""

from __future__ import annotations

import errno
import ipaddress
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rl_trust.errors import UserError


def port_in_use(host: str, port: int) -> bool:
    return port_problem(host, port) is not None


def port_problem(host: str, port: int) -> str | None:
    """Why TensorBoard could not listen on host:port (in use, or a host this machine cannot
    listen on), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except socket.gaierror as e:
            return f"--host {host} does not resolve to an address of this machine ({e.strerror})"
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use: choose another with --port"
            return f"cannot listen on {host}:{port} ({e.strerror or e}): check --host and --port"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def url_for(host: str, port: int) -> str:
    """A URL that opens: a wildcard address (0.0.0.0, ::) is not one, its loopback is."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def serve(runs_root: Path, host: str, port: int) -> int:
    """Start TensorBoard on runs_root, print its URL, return when it stops (0 on Ctrl-C)."""
    root = Path(runs_root)
    if not root.is_dir() or not any(root.rglob("events.out.tfevents.*")):
        raise UserError(f"{root} holds no runs (no TensorBoard event files): train first")
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: must be in 1..65535")
    problem = port_problem(host, port)
    if problem is not None:
        raise UserError(problem)
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(root),
        "--host",
        host,
        "--port",
        str(port),
        "--reload_interval",
        "5",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    print(url_for(host, port), flush=True)
    if not loopback(host):
        print(
            f"rl-trust: warning: --host {host} makes TensorBoard reachable from the network: "
            f"anyone who can reach this machine on port {port} can read every run in {root}",
            file=sys.stderr,
            flush=True,
        )
    print(f"TensorBoard on {root} (Ctrl-C stops it)", file=sys.stderr, flush=True)

    def stop(signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "data/plugins_listing", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"TensorBoard did not answer at {url}") from None
            time.sleep(0.3)


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


def screenshot(url: str, path: Path, size: tuple[int, int] = (1400, 1000)) -> Path:
    """A PNG of `url` in headless Chromium, after its scripts have had 15 s to draw."""
    browser = chromium()
    if browser is None:
        raise UserError("no chromium on PATH (Debian: apt-get install chromium)")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=15000",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Path(path)
