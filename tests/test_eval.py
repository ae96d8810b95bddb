"""`rl-trust eval` as a user runs it: episodes from a checkpoint, eval.json, videos, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import cli, events, scalars


@pytest.fixture
def run(ppo_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ppo_run, tmp_path / "run"))


def test_eval_writes_what_it_prints_and_is_reproducible(run):
    res = cli("eval", str(run), "--episodes", "4", "--deterministic")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(run / "eval.json")
    first = json.loads((run / "eval.json").read_text())
    assert first["episodes"] == len(first["returns"]) == len(first["lengths"]) == 4
    assert first["mean_return"] == pytest.approx(sum(first["returns"]) / 4)
    assert first["returns"] == [float(n) for n in first["lengths"]]  # CartPole: +1 per step
    assert f"return {first['mean_return']:.1f} ± {first['std_return']:.1f}" in res.stdout
    assert first["step"] == 2048 and first["checkpoint"].startswith("step_")

    again = cli("eval", str(run), "--episodes", "4", "--deterministic")
    assert json.loads((run / "eval.json").read_text())["returns"] == first["returns"], again.stderr
    other = cli("eval", str(run), "--episodes", "4", "--seed", "123")
    assert other.returncode == 0
    assert json.loads((run / "eval.json").read_text())["seed"] == 123


def test_eval_records_one_video_per_episode(run):
    assert cli("eval", str(run), "--episodes", "3", "--video").returncode == 0
    res = cli("eval", str(run), "--episodes", "2", "--video")  # the same folder, fewer episodes
    assert res.returncode == 0, res.stderr
    videos = json.loads((run / "eval.json").read_text())["videos"]
    assert len(videos) == 2
    for path in map(Path, videos):
        data = path.read_bytes()
        assert path.suffix == ".mp4" and len(data) > 1000 and data[4:8] == b"ftyp"
        assert f"video: {path}" in res.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--checkpoint", "7"], "no checkpoint at step 7"),
        (["--checkpoint", "best"], "no best checkpoint"),
        (["--checkpoint", "newest"], "use latest, best or a step number"),
        (["--episodes", "0"], "must be in 1..1000000"),
    ],
)
def test_eval_bad_input_is_one_line_status_2(run, args, message):
    res = cli("eval", str(run), *args)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_eval_of_a_folder_that_is_not_a_run(tmp_path):
    res = cli("eval", str(tmp_path))
    assert res.returncode == 2 and "not an rl-trust run folder" in res.stderr


def test_periodic_evaluation_logs_sb3_tags_and_keeps_the_best_checkpoint(tmp_path):
    run = tmp_path / "run"
    res = cli(
        "train",
        "--agent",
        "ppo-clip",
        "--steps",
        "4096",
        "--run-dir",
        str(run),
        "--no-progress",
        "--set",
        "n_steps=512",
        "--set",
        "eval_every=1024",
        "--set",
        "eval_episodes=2",
    )
    assert res.returncode == 0, res.stderr
    acc = events(run)
    rewards = scalars(acc, "eval/mean_reward")
    assert sorted(rewards) == [1024, 2048, 3072, 4096]
    best = json.loads((run / "checkpoints" / "best" / "state.json").read_text())["state"]
    assert best["best_eval"] == pytest.approx(max(rewards.values()))
    assert best["step"] == min(s for s, r in rewards.items() if r == max(rewards.values()))
    assert scalars(acc, "eval/best_mean_reward")[4096] == pytest.approx(max(rewards.values()))
    res = cli("eval", str(run), "--checkpoint", "best", "--deterministic", "--episodes", "2")
    assert res.returncode == 0, res.stderr
    evaluated = json.loads((run / "eval.json").read_text())
    assert evaluated["checkpoint"] == "best" and evaluated["step"] == best["step"]
    # the same episodes (seeds) and the same deterministic policy: the same mean return
    assert evaluated["mean_return"] == pytest.approx(best["best_eval"])


def robot_pixels(frame) -> int:
    """Pixels of the hopper's brown body (the floor is a grey-green checker, the sky blue)."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((r - b > 30) & (r - g > 15)).sum())


def test_videos_of_mujoco_robots_follow_the_robot(monkeypatch):
    import gymnasium as gym

    from rl_trust.evaluate import follow_camera

    monkeypatch.setenv("MUJOCO_GL", "egl")
    env = gym.make("Hopper-v5", render_mode="rgb_array", width=160, height=160)
    env.reset(seed=0)
    assert robot_pixels(env.render()) > 100  # at the start it is in view
    sim = env.unwrapped
    qpos = sim.data.qpos.copy()
    qpos[0] += 20.0  # 20 m down the track, as after a few seconds of hopping
    sim.set_state(qpos, sim.data.qvel)
    assert robot_pixels(env.render()) == 0  # gymnasium's default view has lost it
    follow_camera(env)
    assert robot_pixels(env.render()) > 100  # the model's "track" camera follows it
    env.close()


def test_eval_of_a_run_with_several_envs(tmp_path):
    """The checkpoint's normalizer holds one running return per training env; eval, with
    one env, still loads it."""
    run = tmp_path / "run"
    res = cli(
        "train",
        "--steps",
        "256",
        "--set",
        "n_envs=2",
        "--set",
        "n_steps=64",
        "--set",
        "normalize_reward=true",
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    res = cli("eval", str(run), "--episodes", "2")
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "eval.json").read_text())["episodes"] == 2
