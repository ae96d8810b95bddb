"""Your own network through the CLI: `--set policy=package.module:factory` trains, resumes
and evaluates a module written by the user (on PYTHONPATH), and a factory that cannot be
imported or breaks the contract stops the run with one line saying what was expected."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import yaml
from conftest import cli
from safetensors.torch import load_file

from rl_trust import agents, config

# the example of docs/networks.md: SB3's custom-extractor contract
NETWORK = """
import torch
from torch import nn


def tower(n_in: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())


class TwoTowers(nn.Module):
    def __init__(self, n_obs: int, width: int = 64):
        super().__init__()
        self.latent_dim_pi = self.latent_dim_vf = width
        self.pi, self.vf = tower(n_obs, width), tower(n_obs, width)

    def forward(self, obs: torch.Tensor):
        return self.pi(obs), self.vf(obs)


def factory(observation_space, action_space):
    return TwoTowers(observation_space.shape[0])
"""

BROKEN = """
import torch
from torch import nn


class Narrow(nn.Module):
    latent_dim_pi, latent_dim_vf = 64, 64

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 32)

    def forward(self, obs):
        return self.body(obs), self.body(obs)


class Single(Narrow):
    def forward(self, obs):
        return torch.zeros(len(obs), 64)


class NoDims(nn.Module):
    def forward(self, obs):
        return obs, obs


def narrow(observation_space, action_space):
    return Narrow()


def single(observation_space, action_space):
    return Single()


def no_dims(observation_space, action_space):
    return NoDims()


def not_a_module(observation_space, action_space):
    return "a string"


def fails(observation_space, action_space):
    raise ValueError("no network for this space")

not_callable = 3
"""


def modules(tmp_path: Path) -> dict:
    """PYTHONPATH holding the user's modules, written into tmp_path."""
    (tmp_path / "mynet.py").write_text(textwrap.dedent(NETWORK))
    (tmp_path / "broken.py").write_text(textwrap.dedent(BROKEN))
    (tmp_path / "crashes.py").write_text("raise RuntimeError('import-time failure')\n")
    return {"PYTHONPATH": str(tmp_path)}


def train(tmp_path: Path, *args: str, steps: int = 3072, env: dict | None = None):
    return cli(
        "train",
        "--env",
        "CartPole-v1",
        "--steps",
        str(steps),
        "--runs-root",
        str(tmp_path / "runs"),
        "--no-progress",
        "--set",
        "n_steps=512",
        *args,
        env=env,
    )


def test_own_network_trains_resumes_and_evaluates(tmp_path, monkeypatch):
    env = modules(tmp_path)
    res = train(tmp_path, "--agent", "ppo", "--set", "policy=mynet:factory", env=env)
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.split()[-1])
    written = yaml.safe_load((run / "config.yaml").read_text())["agent"]
    assert (written["policy"], written["engine"]) == ("mynet:factory", "auto")

    # the checkpoint holds every parameter of the network, the user's module's included,
    # trained away from the initialization that the same seed gives
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    probe = gym.make("CartPole-v1")
    initial = agents.build(cfg.agent, probe.observation_space, probe.action_space, 0).policy
    (ckpt,) = sorted((run / "checkpoints").glob("step_*"))
    tensors = load_file(ckpt / "tensors.safetensors")
    saved = {
        k.removeprefix("s.policy."): v for k, v in tensors.items() if k.startswith("s.policy.")
    }
    assert saved.keys() == initial.state_dict().keys()
    assert "extractor.pi.0.weight" in saved and saved["extractor.pi.0.weight"].shape == (64, 4)
    for name, value in initial.state_dict().items():
        assert not torch.allclose(saved[name], value), name

    # a run folder's config is data: its module is imported only when the user trusts it
    res = cli("resume", str(run), "--steps", "4096", "--no-progress", env=env)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "policy 'mynet:factory'" in res.stderr and "--allow-import" in res.stderr
    res = cli("resume", str(run), "--steps", "4096", "--no-progress", "--allow-import", env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["steps"], summary["updates"]) == (4096, 8)

    res = cli("eval", str(run), "--episodes", "3", "--deterministic", env=env)
    assert res.returncode == 2 and "--allow-import" in res.stderr
    res = cli("eval", str(run), "--episodes", "3", "--deterministic", "--allow-import", env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["step"] == 4096 and len(result["returns"]) == 3


def test_own_network_trains_with_trpo(tmp_path):
    res = train(
        tmp_path,
        "--agent",
        "trpo",
        "--set",
        "policy=mynet:factory",
        steps=2048,
        env=modules(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((Path(res.stdout.split()[-1]) / "summary.json").read_text())
    assert summary["final"]["trpo/accepted"] == 1.0


BAD = {
    "nosuchmodule:factory": "cannot import module 'nosuchmodule' (ModuleNotFoundError",
    "crashes:factory": "cannot import module 'crashes' (RuntimeError: import-time failure)",
    "mynet:nothing": "module 'mynet' has no callable 'nothing'; expected a callable factory",
    "broken:not_callable": "has no callable 'not_callable'",
    "broken:fails": "raised ValueError: no network for this space",
    "broken:not_a_module": "the factory returned str; expected a callable factory",
    "broken:no_dims": "latent_dim_pi=None, latent_dim_vf=None; expected both to be integers",
    "broken:narrow": "returned a tuple of 2: a tensor of shape (2, 32), a tensor of shape "
    "(2, 32); expected (latent_pi, latent_vf) of shapes (2, 64) and (2, 64)",
    "broken:single": "returned a tensor of shape (2, 64); expected (latent_pi, latent_vf)",
    "no_colon": "policy='no_colon' is out of range: policy must be null or package.module:factory",
}


@pytest.mark.parametrize("spec", BAD)
def test_a_bad_factory_exits_2_with_one_line(tmp_path, spec):
    res = train(tmp_path, "--set", f"policy={spec}", env=modules(tmp_path))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rl-trust: error: "), res.stderr
    assert BAD[spec] in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was created


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--agent", "trpo", "--set", "policy=shared:factory"),
            "trpo needs separate policy and value networks, but latent_pi and latent_vf both "
            "depend on extractor.trunk.weight, extractor.trunk.bias",
        ),
        (
            ("--set", "policy=mynet:factory", "--set", "engine=manual"),
            "engine=manual cannot train policy=mynet:factory",
        ),
        (
            ("--set", "engine=manual", "--set", "device=cuda"),
            "engine=manual runs on the CPU: device=cuda needs engine=auto or engine=autograd",
        ),
        (
            ("--set", "engine=fast"),
            "engine='fast' is not valid: engine takes one of auto, manual, autograd",
        ),
        (("--set", "device=tpu"), "device='tpu' is not valid: device takes one of auto, cpu, cuda"),
    ],
)
def test_network_settings_that_cannot_work_exit_2(tmp_path, args, message):
    env = modules(tmp_path)
    (tmp_path / "shared.py").write_text(
        textwrap.dedent("""
        from torch import nn

        class Shared(nn.Module):
            latent_dim_pi = latent_dim_vf = 8

            def __init__(self):
                super().__init__()
                self.trunk = nn.Linear(4, 8)

            def forward(self, obs):
                h = self.trunk(obs).tanh()
                return h, h

        def factory(observation_space, action_space):
            return Shared()
    """)
    )
    res = train(tmp_path, *args, env=env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_exits_2(tmp_path):
    res = train(tmp_path, "--set", "device=cuda")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "rl-trust: error: device=cuda: torch sees no CUDA device (torch.cuda.is_available() "
        "is false); use device=auto or device=cpu"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("agent", ["ppo", "trpo"])
def test_own_network_on_cuda_trains_resumes_and_evaluates(tmp_path, agent):
    env = modules(tmp_path)
    res = train(
        tmp_path,
        "--agent",
        agent,
        "--set",
        "policy=mynet:factory",
        "--set",
        "device=cuda",
        steps=2048,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.split()[-1])
    res = cli("resume", str(run), "--steps", "3072", "--allow-import", "--no-progress", env=env)
    assert res.returncode == 0, res.stderr
    res = cli("eval", str(run), "--episodes", "2", "--allow-import", env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_own_network_solves_cartpole_within_100k_steps_with_autograd(tmp_path):
    env = modules(tmp_path)
    res = cli(
        "train",
        "--agent",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "100000",
        "--seed",
        "0",
        "--set",
        "policy=mynet:factory",
        "--set",
        "engine=autograd",
        "--runs-root",
        str(tmp_path / "runs"),
        "--no-progress",
        env=env,
        timeout=1800,
    )
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.split()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["rollout/ep_rew_mean"] >= 475
    res = cli("eval", str(run), "--episodes", "10", "--deterministic", "--allow-import", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "eval.json").read_text())["mean_return"] >= 475
