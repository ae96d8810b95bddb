"""Headless Chromium driven over the DevTools protocol (websocket-client, the `test` extra):
open a page, run JavaScript in it — which can walk the shadow roots TensorBoard's Polymer
elements draw into, where `--dump-dom` does not look — and take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic "
    "--no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --hide-scrollbars "
    "--remote-debugging-port=0"
).split()


class Chromium:
    """One browser with one page, in a fresh profile; a context manager that stops it."""

    def __init__(self, binary: str, size: tuple[int, int] = (1800, 1400)):
        # (its helper processes may still be writing there as it stops: cleaned up regardless)
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        cmd = [
            binary,
            *FLAGS,
            f"--user-data-dir={self.profile.name}",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        # Chromium writes its DevTools port (then a path) to this file once it listens.
        active = Path(self.profile.name, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while len(active.read_text().splitlines() if active.exists() else []) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{binary} did not open its DevTools port")
            time.sleep(0.1)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
        self.ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # the renderer, GPU and crashpad helpers too, before the profile goes
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.profile.cleanup()

    def send(self, method: str, **params) -> dict:
        """One DevTools command; its result (the events that arrive meanwhile are dropped)."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while (reply := json.loads(self.ws.recv())).get("id") != msg_id:
            pass
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, js: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        out = self.send("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"JavaScript failed: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, js: str, expected, timeout: float = 60.0):
        """Evaluate `js` until it gives `expected` or `timeout` s pass; the last value."""
        deadline = time.monotonic() + timeout
        while (value := self.evaluate(js)) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        return value

    def screenshot(self, path: Path) -> Path:
        png = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(png))
        return Path(path)
