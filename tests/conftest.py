"""Shared test helpers: the CLI in a subprocess, and event files read back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

RL_TRUST = str(Path(sys.executable).parent / "rl-trust")

# The Ctrl-C tests play a user at a terminal. A shell that starts a job in the background
# (`bash .ci/run &`, nohup) leaves SIGINT ignored, and a child inherits an ignored signal, so
# the CLI processes under test would never see it: give them a terminal's default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `rl-trust ARGS` as a user would, in a subprocess (`env`: extra variables)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [RL_TRUST, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def pythonpath(*folders: Path) -> dict[str, str]:
    """`cli`'s env= for a subprocess that imports a module of the test's from `folders`
    (before what PYTHONPATH already holds)."""
    paths = [str(f) for f in folders] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def train_and_resume(run: Path, *settings: str, steps: int = 1024, to: int = 2048) -> dict:
    """`rl-trust train` CartPole into `run` with `--set` settings (n_steps 128 unless given),
    then `rl-trust resume` it to `to` steps, each asserted to succeed; returns summary.json."""
    sets = [arg for setting in ("n_steps=128", *settings) for arg in ("--set", setting)]
    res = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--steps",
        str(steps),
        *sets,
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    res = cli("resume", str(run), "--steps", str(to), "--no-progress")
    assert res.returncode == 0, res.stderr
    return json.loads((run / "summary.json").read_text())


def events(run_dir: Path) -> ea.EventAccumulator:
    """The run's event file, every scalar and histogram kept."""
    acc = ea.EventAccumulator(
        str(run_dir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}
    )
    acc.Reload()
    return acc


def scalars(acc: ea.EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def _short_run(tmp_path_factory, agent: str) -> Path:
    root = tmp_path_factory.mktemp("runs")
    res = cli(
        "train",
        "--agent",
        agent,
        "--env",
        "CartPole-v1",
        "--steps",
        "2048",
        "--seed",
        "0",
        "--set",
        "n_steps=512",
        "--set",
        "batch_size=128",
        "--set",
        "n_epochs=4",
        "--runs-root",
        str(root),
    )
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory) -> Path:
    """One short run of the default ppo through the CLI, shared by the tests that read it back."""
    return _short_run(tmp_path_factory, "ppo")


@pytest.fixture(scope="session")
def paper_run(tmp_path_factory) -> Path:
    """The same run with the paper's rule for β (ppo-paper)."""
    return _short_run(tmp_path_factory, "ppo-paper")


@pytest.fixture(scope="session")
def trpo_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    res = cli(
        "train",
        "--agent",
        "trpo",
        "--env",
        "CartPole-v1",
        "--steps",
        "16384",
        "--seed",
        "0",
        "--set",
        "n_steps=1024",
        "--runs-root",
        str(root),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture
def float64():
    """Double precision for numeric comparisons, restored afterwards for the other tests."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)
