"""Messages a user reads (issue 26): each names the value and what to do, in the words of the
door it came through (the command line's flags, the Python API's arguments)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import RL_TRUST, cli, pythonpath

import rl_trust
from rl_trust import checkpoint

TINY = ["--set", "n_steps=64", "--set", "batch_size=64", "--set", "n_epochs=1"]


def test_a_parse_error_names_the_command_once():
    res = cli("--bogus")
    assert res.returncode == 2 and "(see rl-trust --help)" in res.stderr
    assert "rl-trust rl-trust" not in res.stderr
    res = cli("train", "--steps", "x")
    assert res.returncode == 2 and "(see rl-trust train --help)" in res.stderr


def test_board_on_a_host_that_does_not_resolve_says_so(ppo_run):
    res = cli(
        "board", str(ppo_run.parent), "--host", "nosuchhost.invalid", "--port", "6006", timeout=60
    )
    assert res.returncode == 2 and "is in use" not in res.stderr
    assert "nosuchhost.invalid does not resolve" in res.stderr


def _corrupt(path: Path) -> None:
    tensors = path / checkpoint.TENSORS
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))


def test_a_corrupt_checkpoint_names_the_newest_earlier_one_that_verifies(tmp_path):
    run = tmp_path / "run"
    res = cli(
        "train",
        "--run-dir",
        str(run),
        "--steps",
        "256",
        "--no-progress",
        *TINY,
        "--set",
        "checkpoint_every=64",
        "--set",
        "keep_checkpoints=10",
    )
    assert res.returncode == 0, res.stderr
    found = checkpoint.list_checkpoints(run)  # 64, 128, 192, 256
    _corrupt(found[2])
    _corrupt(found[3])
    res = cli("resume", str(run), "--steps", "512", "--no-progress")
    assert res.returncode == 2 and "use --checkpoint 128" in res.stderr, res.stderr
    assert "use --checkpoint 192" not in res.stderr and "192 fails its check too" in res.stderr
    res = cli("resume", str(run), "--checkpoint", "192", "--steps", "512", "--no-progress")
    assert res.returncode == 2 and "use --checkpoint 128" in res.stderr, res.stderr
    assert "no earlier checkpoint" not in res.stderr
    with pytest.raises(ValueError, match=r"step 128 .*: load .*step_000000000128 instead") as e:
        rl_trust.load(run)
    assert "--checkpoint" not in str(e.value)  # the API's words


class NaNReward(gym.Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float("nan"), terminated, truncated, info


class NaNObs(gym.Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return np.full_like(obs, np.nan), reward, terminated, truncated, info


@pytest.mark.parametrize(("wrapper", "what"), [(NaNReward, "reward"), (NaNObs, "observation")])
def test_a_non_finite_env_output_is_named_as_the_envs(tmp_path, wrapper, what):
    model = rl_trust.PPO(
        wrapper(gym.make("CartPole-v1")), run_dir=tmp_path / "run", n_steps=64, batch_size=64
    )
    with pytest.raises(rl_trust.errors.Diverged, match=f"returned a non-finite {what}") as e:
        model.learn(64)
    assert "gradient" not in str(e.value) and "diverged.json" in str(e.value)


def test_progress_never_runs_past_the_total_and_names_a_missing_return(tmp_path):
    res = cli(
        "train",
        "--env",
        "Pendulum-v1",
        "--run-dir",
        str(tmp_path / "run"),
        "--steps",
        "32",
        "--set",
        "n_envs=1",
        *TINY,
    )
    assert res.returncode == 0, res.stderr
    assert "step 64/64 (100%)" in res.stderr and "ETA -" not in res.stderr
    assert "no episode finished yet" in res.stderr and "nan" not in res.stderr


def test_the_resume_hint_of_a_module_env_run_carries_allow_import(tmp_path):
    (tmp_path / "mine_env.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MineCartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv',"
        " max_episode_steps=500)\n"
    )
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            RL_TRUST,
            "train",
            "--env",
            "mine_env:MineCartPole-v0",
            "--steps",
            "1000000",
            "--run-dir",
            str(run),
            "--no-progress",
            *TINY,
            "--set",
            "checkpoint_every=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **pythonpath(tmp_path)},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(run.glob("events.out.tfevents.*")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"rl-trust resume {run} --allow-import" in err
    res = cli("resume", str(run), "--steps", "1", "--no-progress")
    assert res.returncode == 2 and "--allow-import" in res.stderr


def test_api_errors_use_the_apis_words(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'n_step'") as e:
        rl_trust.PPO("CartPole-v1", run_dir=False, n_step=64)
    assert "--set" not in str(e.value) and "keyword argument" in str(e.value)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="run_dir=") as e:
        rl_trust.PPO("CartPole-v1", run_dir=tmp_path / "taken")
    assert "--run-dir" not in str(e.value)
