"""The wheel as a user installs it: the presets inside, `rl-trust list` and a short train from
a folder outside the checkout, and preset files of the user's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the source (a build writes build/ and *.egg-info/ beside it)."""
    src, out = tmp_path_factory.mktemp("src") / "rl-trust", tmp_path_factory.mktemp("dist")
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "bench", "benchmarks", "build", "*.egg-info", "__pycache__"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("rl_trust-*.whl")
    return path


def test_the_wheel_carries_every_module_and_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rl_trust").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    for kind in ("agents", "envs"):
        presets = {f"rl_trust/presets/{kind}/{p.name}" for p in (ROOT / kind).glob("*.yaml")}
        assert presets and presets <= names, sorted(presets - names)


def test_the_installed_wheel_lists_presets_and_trains_outside_the_checkout(wheel, tmp_path):
    """A fresh venv holding only the wheel (not editable); its dependencies come from this
    venv's site-packages through a .pth line, so that nothing is downloaded."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    rl_trust = [str(venv / "bin" / "python"), "-m", "rl_trust.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("RL_TRUST_PRESETS", "PYTHONPATH")}
    where = subprocess.run(
        [*rl_trust[:1], "-c", "import rl_trust; print(rl_trust.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site)), where  # the wheel's copy, not the checkout

    listed = subprocess.run(
        [*rl_trust, "list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    for name in ("ppo", "trpo", "ppo-clip", "CartPole-v1", "Hopper-v5"):
        assert f"  {name} " in listed.stdout, listed.stdout
    trained = subprocess.run(
        [*rl_trust, "train", "--steps", "2048", "--no-progress", "--set", "n_steps=512"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    run = Path(tmp_path / trained.stdout.strip().splitlines()[-1])
    assert run.is_relative_to(tmp_path / "runs") and (run / "summary.json").is_file()


def test_a_users_own_agent_and_env_preset_files(tmp_path):
    agent = tmp_path / "my-ppo.yaml"
    agent.write_text(
        yaml.safe_dump(
            {
                "description": "mine",
                "algo": "ppo",
                "kl_penalty": "adaptive",
                "clip": False,
                "n_steps": 256,
            }
        )
    )
    env = tmp_path / "cartpole-fast.yaml"
    env.write_text(yaml.safe_dump({"n_envs": 2, "steps": 1024}))
    res = cli("config", "--agent", str(agent), "--env-preset", str(env))
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert cfg["agent_name"] == "my-ppo" and cfg["agent"]["n_steps"] == 256
    assert cfg["env"]["n_envs"] == 2 and cfg["run"]["steps"] == 1024
    assert not cfg["agent"]["clip"] and cfg["agent"]["kl_penalty"] == "adaptive"
    res = cli(
        "train",
        "--agent",
        str(agent),
        "--env-preset",
        str(env),
        "--runs-root",
        str(tmp_path / "runs"),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    assert "my-ppo-CartPole-v1" in res.stdout
    for args, message in (
        (["--agent", str(tmp_path / "none.yaml")], "not a preset file"),
        (["--env-preset", str(tmp_path)], "not a preset file"),
    ):
        res = cli("config", *args)
        assert res.returncode == 2 and message in res.stderr, res.stderr
