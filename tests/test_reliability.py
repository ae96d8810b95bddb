"""Nothing lost, nothing trusted: kill -9, pickle payloads, divergence, corrupt or foreign
checkpoints, a full disk, exact state after loading, and same seed → same scalars."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RL_TRUST, cli, events, scalars

from rl_trust import checkpoint, config, trainer
from rl_trust import cli as cli_module
from rl_trust.envs import make_vec

TINY = ["--set", "n_steps=128", "--set", "checkpoint_every=256", "--no-progress"]


def tiny_run(root: Path, name: str, *extra: str, steps: int = 512) -> Path:
    run = root / name
    res = cli("train", "--steps", str(steps), "--run-dir", str(run), *TINY, *extra)
    assert res.returncode == 0, res.stderr
    return run


def assert_one_line_error(res, status: int, *phrases: str) -> None:
    assert res.returncode == status, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_kill_9_loses_at_most_one_checkpoint_interval(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [RL_TRUST, "train", "--steps", "1000000", "--run-dir", str(run), *TINY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(checkpoint.list_checkpoints(run)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    at = int(checkpoint.list_checkpoints(run)[-1].name.removeprefix("step_"))
    logged = max(e.step for e in events(run).Scalars("kl/forward_mean"))
    assert logged - at < 256 + 128  # at most one interval (plus the update in flight) lost

    res = cli("resume", str(run), "--steps", str(at + 512), "--no-progress")
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == at + 512
    steps = [e.step for e in events(run).Scalars("kl/forward_mean")]
    assert steps == list(range(128, at + 513, 128))  # none duplicated, none missing
    assert not list((run / "checkpoints").glob(".tmp-*"))


class Payload:
    """Unpickling this creates a file: proof that something executed it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_in_place_of_a_checkpoint_never_executes(tmp_path):
    run = tiny_run(tmp_path, "run")
    marker = tmp_path / "pwned"
    newest = checkpoint.list_checkpoints(run)[-1]
    data = pickle.dumps(Payload(marker))
    with open(os.devnull, "w"):  # the payload works: loading it with pickle would run it
        pickle.loads(data).close()
    assert marker.exists()
    marker.unlink()
    for name in (checkpoint.TENSORS, checkpoint.STATE, "model.pt", "checkpoint.pkl"):
        (newest / name).write_bytes(data)
    torch_file = newest.parent / "step_000000000600"  # also a torch.save file, newest by name
    torch_file.mkdir()
    torch.save({"x": Payload(marker)}, torch_file / checkpoint.TENSORS)
    (torch_file / checkpoint.STATE).write_bytes(data)

    assert_one_line_error(
        cli("resume", str(run), "--steps", "4096", "--no-progress"), 2, "cannot be read"
    )
    assert_one_line_error(cli("eval", str(run)), 2, "cannot be read")
    assert not marker.exists()


def test_divergence_stops_before_the_step_writes_a_diagnostic_and_keeps_checkpoints(tmp_path):
    run = tmp_path / "run"
    res = cli(
        "train", "--env", "rl_trust/NaNAfter-v0", "--steps", "4096", "--run-dir", str(run), *TINY
    )
    assert_one_line_error(
        res,
        3,
        "training diverged",  # (named as the env's, issue 26)
        "env rl_trust/NaNAfter-v0 returned a non-finite observation",
        "diverged.json",
        "last good checkpoint is kept",
    )
    report = json.loads((run / "diverged.json").read_text())
    assert report["update"] == 5 and report["step"] == 512  # NaN from step 601 on
    assert 0 < report["batch"]["obs"]["non_finite"] < 40  # (episode resets are finite)
    assert report["batch"]["advantages"]["non_finite"] > 0
    assert report["last_checkpoint"] == "step_000000000512"
    assert [p.name for p in checkpoint.list_checkpoints(run)] == [
        "step_000000000256",
        "step_000000000512",
    ]
    state = checkpoint.load(checkpoint.list_checkpoints(run)[-1])
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
    assert not (run / "summary.json").exists()
    assert max(scalars(events(run), "kl/forward_mean")) == 512  # the bad update never logged


def test_corrupt_and_truncated_checkpoints_are_refused(tmp_path):
    run = tiny_run(tmp_path, "run")
    newest = checkpoint.list_checkpoints(run)[-1]
    tensors = newest / checkpoint.TENSORS
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    assert_one_line_error(
        cli("resume", str(run), "--steps", "1024", "--no-progress"),
        2,
        "fails its SHA-256 check",
        "use --checkpoint 256",
    )
    (newest / checkpoint.STATE).write_text('{"step": 51')
    assert_one_line_error(cli("eval", str(run)), 2, "cannot be read")
    older = checkpoint.list_checkpoints(run)[0]
    assert checkpoint.load(older)["step"] == 256  # what was saved before is intact


def test_a_checkpoint_from_another_env_is_refused(tmp_path):
    run = tiny_run(tmp_path, "cartpole")
    other = tiny_run(tmp_path, "acrobot", "--env", "Acrobot-v1")
    foreign = checkpoint.list_checkpoints(other)[-1]  # (a later step than the run's own)
    shutil.copytree(foreign, run / "checkpoints" / foreign.name)
    assert_one_line_error(
        cli("resume", str(run), "--steps", "8192", "--no-progress"),
        2,
        "saved for observation space",
        "CartPole-v1",
    )


def test_a_folder_that_is_not_a_run_and_a_finished_run(tmp_path):
    assert_one_line_error(cli("resume", str(tmp_path), "--no-progress"), 2, "not an rl-trust run")
    run = tiny_run(tmp_path, "run")
    assert_one_line_error(
        cli("resume", str(run), "--no-progress"), 2, "pass --steps larger than 512"
    )


def test_a_full_disk_while_saving_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    run = tiny_run(tmp_path, "run")
    before = {p.name: checkpoint.load(p)["step"] for p in checkpoint.list_checkpoints(run)}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "save_file", full)
    status = cli_module.main(["resume", str(run), "--steps", "1024", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert {p.name: checkpoint.load(p)["step"] for p in checkpoint.list_checkpoints(run)} == before
    assert not list((run / "checkpoints").glob(".tmp-*"))


def flatten(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flatten(v, f"{prefix}/{k}")
    elif isinstance(x, list | tuple):
        for i, v in enumerate(x):
            yield from flatten(v, f"{prefix}/{i}")
    else:
        yield prefix, x


@pytest.mark.parametrize("agent", ["ppo", "trpo"])
def test_learner_state_is_bit_identical_right_after_loading(tmp_path, agent):
    run = tiny_run(
        tmp_path,
        agent,
        "--agent",
        agent,
        "--env",
        "Pendulum-v1",
        "--set",
        "normalize_obs=true",
        "--set",
        "normalize_reward=true",
    )
    saved = checkpoint.load(checkpoint.list_checkpoints(run)[-1])
    cfg = config.read_run(run)
    env = make_vec(cfg.env, cfg.run.seed)
    try:
        again = trainer.Learner(cfg, env, saved).state_dict()
    finally:
        env.close()
    a, b = dict(flatten(saved)), dict(flatten(again))
    # the one difference by design: the resumed segment resets its envs with a new seed
    assert b.pop("/rng/env_seed") == cfg.run.seed + 7919 * saved["updates"]
    assert a.pop("/rng/env_seed") == cfg.run.seed
    assert a.keys() == b.keys()
    assert any(k.startswith("/agent/") for k in a) and "/rng/python/1/0" in a
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), key
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), key
        else:
            assert x == y, key


@pytest.mark.parametrize("agent", ["ppo", "trpo"])
def test_the_same_seed_gives_bit_identical_scalars(tmp_path, agent):
    runs = [tiny_run(tmp_path, f"{agent}{i}", "--agent", agent, steps=768) for i in range(2)]
    first, second = (events(r) for r in runs)
    tags = [t for t in first.Tags()["scalars"] if not t.startswith("time/fps")]
    assert len(tags) > 20
    for tag in tags:
        assert scalars(first, tag) == scalars(second, tag), tag
