"""Checkpoints: exact round trip without pickle, resume, and interruption through the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import torch
from conftest import RL_TRUST, cli, events, scalars

from rl_trust import checkpoint


def test_pack_unpack_round_trip_is_exact(tmp_path):
    learner = {  # what checkpoint.SCHEMA asks of every checkpoint
        "updates": 1,
        "best_eval": None,
        "policy": {},
        "agent": {},
        "normalizer": {},
        "rng": {},
        "episodes": {"returns": [], "lengths": [], "count": 0},
        "spaces": {"observation": "Box", "action": "Discrete(2)"},
        "config": {},
        "versions": {},
    }
    state = {
        **learner,
        "step": 7,
        "beta": 0.25,
        "name": "ppo",
        "none": None,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 2)}},
            "param_groups": [{"lr": 3e-4, "params": [0]}],
        },
        "norm": {"mean": np.arange(3.0), "count": np.array(5.0), "f32": np.ones((2, 2), "f4")},
        "generator": torch.Generator().manual_seed(3).get_state(),
    }
    path = checkpoint.save(tmp_path, 7, state, keep=2)
    back = checkpoint.load(path)
    assert back["step"] == 7 and back["beta"] == 0.25 and back["none"] is None
    assert list(back["optimizer"]["state"]) == [0]  # int keys survive JSON
    assert torch.equal(
        back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]
    )
    for key, value in state["norm"].items():
        assert back["norm"][key].shape == value.shape and back["norm"][key].dtype == value.dtype
        assert np.array_equal(back["norm"][key], value)
    assert torch.equal(back["generator"], state["generator"])
    for step in (8, 9, 10):
        checkpoint.save(tmp_path, step, {**state, "step": step}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "step_000000000009",
        "step_000000000010",
    ]


def test_resume_continues_the_same_series(tmp_path):
    args = ["--set", "n_steps=256", "--set", "checkpoint_every=512", "--no-progress"]
    res = cli(
        "train", "--steps", "1024", "--run-dir", str(tmp_path / "run"), *args[:-1], "--no-progress"
    )
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    res = cli("resume", str(run), "--no-progress")
    assert res.returncode == 2 and "pass --steps larger than 1024" in res.stderr
    res = cli("resume", str(run), "--steps", "2048", "--no-progress")
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2048 and summary["updates"] == 8
    steps = [e.step for e in events(run).Scalars("kl/forward_mean")]
    assert steps == list(range(256, 2049, 256))  # no step missing, none duplicated
    assert len(scalars(events(run), "time/updates")) == 8


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            RL_TRUST,
            "train",
            "--steps",
            "1000000",
            "--run-dir",
            str(run),
            "--no-progress",
            "--set",
            "n_steps=128",
            "--set",
            "checkpoint_every=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(run.glob("events.out.tfevents.*")):
        time.sleep(0.2)
    time.sleep(2.0)  # a few updates in
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"rl-trust resume {run}" in err and "Traceback" not in err
    saved = checkpoint.list_checkpoints(run)
    assert saved, "no checkpoint after SIGINT"
    at = int(saved[-1].name.removeprefix("step_"))
    res = cli("resume", str(run), "--steps", str(at + 256), "--no-progress")
    assert res.returncode == 0, res.stderr
    steps = [e.step for e in events(run).Scalars("kl/forward_mean")]
    assert steps == list(range(128, at + 257, 128))
