"""The two gradient engines behind one policy interface. The built-in MLP trained by the
manual engine (backward by hand) and by the autograd engine (torch.autograd.backward from
the agents' closed-form ∂L/∂(distribution parameters) and ∂L/∂values) gives the same
parameters and metrics, in double precision, for every distribution family, every PPO
variant and TRPO; and a network that is not an MLP gets the gradient of the loss."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rl_trust import agents
from rl_trust.config import PPOConfig, TRPOConfig
from rl_trust.errors import UserError
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.families import family_for
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import layout_for
from rl_trust.optim import flat_parameters
from rl_trust.rollout import Batch

pytestmark = pytest.mark.usefixtures("float64")  # numbers compared in double (conftest)

OBS = gym.spaces.Box(-1.0, 1.0, (5,))
SPACES = {
    "categorical": gym.spaces.Discrete(4),
    "multicategorical": gym.spaces.MultiDiscrete([3, 2]),
    "bernoulli": gym.spaces.MultiBinary(3),
    "gaussian": gym.spaces.Box(-1.0, 1.0, (2,)),
}
PPO_VARIANTS = {
    "clip": {"clip": True},
    "adaptive": {"clip": False, "kl_penalty": "adaptive", "kl_target": 0.003},
    "fixed": {"clip": False, "kl_penalty": "fixed", "kl_beta": 0.5},
    "fixed reverse": {"clip": False, "kl_penalty": "fixed", "kl_direction": "reverse"},
    "adaptive reverse": {"clip": True, "kl_penalty": "adaptive", "kl_direction": "reverse"},
    "target_kl": {"clip": True, "target_kl": 2e-4},
    "entropy, value clip": {"ent_coef": 0.05, "clip_range_vf": 0.2, "lr_schedule": "linear"},
    "pid rescale": {
        "clip": False,
        "kl_penalty": "adaptive",
        "kl_controller": "pid",
        "kl_rescale": True,
    },
    "pid spread": {
        "clip": False,
        "kl_penalty": "adaptive",
        "kl_controller": "pid",
        "kl_spread": 2.0,
        "kl_target": 0.003,
    },
    "pid per-state cap": {
        "clip": False,
        "kl_penalty": "adaptive",
        "kl_controller": "pid",
        "kl_state_cap": 1.0,
        "kl_target": 0.003,
    },
}
COMMON = {"net_arch": (16, 16), "n_steps": 256, "batch_size": 64}
# the autograd engine on each device torch sees, against the manual engine (CPU only); on
# CUDA the sums run in another order, so the twins agree to a looser tolerance
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
TOLERANCE = {"cpu": {"rtol": 1e-9, "atol": 1e-12}, "cuda": {"rtol": 1e-6, "atol": 1e-9}}


def rollout(policy: ActorCritic, g: torch.Generator, n: int = 256) -> Batch:
    """A batch as the rollout stores it: actions drawn from the policy, its own parameters."""
    obs = torch.randn(n, 5, generator=g)
    with torch.no_grad():
        params, values = policy.dist_params(obs), policy.value(obs)
        actions = policy.family.sample(params, generator=g)
    return Batch(
        obs=obs,
        actions=actions,
        log_probs=policy.family.log_prob(params, actions),
        values=values,
        dist_params=params,
        advantages=torch.randn(n, generator=g),
        returns=values + torch.randn(n, generator=g),
    )


def twins(cfg, kind: str, device: str = "cpu"):
    """The same config built with each engine, from the same seed: the manual engine on the
    CPU, the autograd engine on `device` (each pinned: device=auto would pick a GPU)."""
    manual, auto = (
        agents.build(dataclasses.replace(cfg, engine=engine, device=dev), OBS, SPACES[kind], seed=7)
        for engine, dev in (("manual", "cpu"), ("autograd", device))
    )
    assert type(manual.policy) is MlpActorCritic and type(auto.policy) is ActorCritic
    assert {p.device.type for p in auto.policy.parameters()} == {device}
    # the same network: same names, same initial values, bit for bit
    ours, theirs = manual.policy.state_dict(), auto.policy.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k].cpu()) for k in ours)
    return manual, auto


def assert_same_metrics(a: dict, b: dict, device: str = "cpu") -> None:
    tol = TOLERANCE[device]
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key].cpu(), **tol)
        else:
            assert a[key] == pytest.approx(b[key], rel=tol["rtol"], abs=tol["atol"]), key


def assert_same_parameters(p: nn.Module, q: nn.Module, device: str = "cpu") -> None:
    theirs = q.state_dict()
    for name, value in p.state_dict().items():
        torch.testing.assert_close(value, theirs[name].cpu(), **TOLERANCE[device], msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", PPO_VARIANTS)
@pytest.mark.parametrize("kind", SPACES)
def test_ppo_updates_are_the_same_under_both_engines(kind, variant, device):
    cfg = PPOConfig(**COMMON, n_epochs=3, learning_rate=3e-3, **PPO_VARIANTS[variant])
    manual, auto = twins(cfg, kind, device)
    start = [p.detach().clone() for p in manual.policy.parameters()]
    g = torch.Generator().manual_seed(11)
    for update in range(2):  # the second sees β as the first left it
        batch = rollout(manual.policy, g)
        m1 = manual.update(batch, progress_remaining=1.0 - update / 2)
        m2 = auto.update(batch.to(device), progress_remaining=1.0 - update / 2)
        assert_same_metrics(m1, m2, device)
        assert_same_parameters(manual.policy, auto.policy, device)
        assert manual.beta == auto.beta
        assert m1["train/grad_steps"] > 0
        if "target_kl" in PPO_VARIANTS[variant]:  # stopped before the end, at the same step
            assert m1["train/early_stopped"] == 1.0
            assert m1["train/grad_steps"] < 3 * 256 // 64
    moved = [not torch.equal(a, b) for a, b in zip(start, manual.policy.parameters(), strict=True)]
    assert all(moved)  # every parameter, the value head's and the log-std's included
    torch.testing.assert_close(manual.optimizer.m, auto.optimizer.m.cpu(), **TOLERANCE[device])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("kind", SPACES)
def test_trpo_updates_are_the_same_under_both_engines(kind, direction, device):
    cfg = TRPOConfig(**COMMON, n_critic_updates=3, kl_direction=direction)
    manual, auto = twins(cfg, kind, device)
    g = torch.Generator().manual_seed(12)
    for _ in range(2):
        batch = rollout(manual.policy, g)
        m1, m2 = manual.update(batch), auto.update(batch.to(device))
        assert_same_metrics(m1, m2, device)
        assert_same_parameters(manual.policy, auto.policy, device)
        assert m1["trpo/accepted"] == 1.0
    torch.testing.assert_close(manual.theta, auto.theta.cpu(), **TOLERANCE[device])
    torch.testing.assert_close(manual.phi, auto.phi.cpu(), **TOLERANCE[device])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", SPACES)
def test_rollout_samplers_draw_the_same_actions(kind, device):
    manual, auto = twins(PPOConfig(**COMMON), kind, device)
    x = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
    a = manual.policy.sampler(np.random.default_rng(1))(x)
    b = auto.policy.sampler(np.random.default_rng(1))(x)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert len(np.unique(a, axis=0)) > 1  # really sampled, not one action repeated


class SharedTrunk(nn.Module):
    """Not an MLP pair: one trunk with a LayerNorm feeding both latents (PPO only)."""

    latent_dim_pi, latent_dim_vf = 8, 6

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 12), nn.LayerNorm(12), nn.ReLU())
        self.pi, self.vf = nn.Linear(12, 8), nn.Linear(12, 6)

    def forward(self, obs):
        h = self.trunk(obs)
        return torch.tanh(self.pi(h)), self.vf(h).sin()


@pytest.mark.parametrize("variant", ["clip", "adaptive reverse", "entropy, value clip"])
@pytest.mark.parametrize("kind", SPACES)
def test_autograd_engine_gives_the_gradient_of_the_loss_on_any_network(kind, variant):
    """PPO's closed-form ∂L/∂(distribution parameters) and ∂L/∂values, carried through a
    shared-trunk network by autograd, equal autograd of the whole loss."""
    torch.manual_seed(3)
    policy = ActorCritic(layout_for(OBS), family_for(SPACES[kind]), SharedTrunk())
    assert policy.shared  # the trunk serves both latents
    cfg = PPOConfig(**COMMON, **PPO_VARIANTS[variant])
    agent = agents.ppo.PPO(cfg, policy, torch.Generator().manual_seed(0))
    mb = rollout(policy, torch.Generator().manual_seed(4), n=48)
    mb.dist_params = mb.dist_params + 0.3  # away from the current policy: clipping is active
    mb.log_probs = policy.family.log_prob(mb.dist_params, mb.actions)

    params, values = policy(mb.obs)
    loss = agent.loss(agent.objective(mb, params, values))
    expected = torch.autograd.grad(loss, list(policy.parameters()))
    expected = torch.cat([g.reshape(-1) for g in expected])

    with torch.no_grad():
        params, values, cache = policy.forward_train(mb.obs)
        assert not params.requires_grad  # the agent sees plain tensors
        log_ratio = policy.family.log_prob(params, mb.actions) - mb.log_probs
        agent.weights.grad.zero_()
        policy.backward(cache, *agent.gradient(mb, params, values, log_ratio))
    torch.testing.assert_close(agent.weights.grad, expected)
    assert (agent.weights.grad != 0).float().mean() > 0.9


class Separate(nn.Module):
    """Two different towers, sharing nothing."""

    latent_dim_pi, latent_dim_vf = 7, 9

    def __init__(self):
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(5, 7), nn.ELU())
        self.vf = nn.Sequential(nn.Linear(5, 9), nn.LayerNorm(9), nn.Tanh())

    def forward(self, obs):
        return self.pi(obs), self.vf(obs)


def test_parameters_split_by_which_latent_uses_them():
    policy = ActorCritic(layout_for(OBS), family_for(SPACES["gaussian"]), Separate())
    names = {id(p): n for n, p in policy.named_parameters()}
    assert [
        names[id(p)] for p in policy.policy_parameters()
    ] == "extractor.pi.0.weight extractor.pi.0.bias pi_head.weight pi_head.bias log_std".split()
    assert [names[id(p)] for p in policy.value_parameters()] == (
        "extractor.vf.0.weight extractor.vf.0.bias "
        "extractor.vf.1.weight extractor.vf.1.bias vf_head.weight "
        "vf_head.bias"
    ).split()
    assert policy.shared == []
    shared = ActorCritic(layout_for(OBS), family_for(SPACES["gaussian"]), SharedTrunk())
    assert shared.shared == [f"extractor.trunk.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_trpo_steps_any_separate_network_within_delta(kind):
    torch.manual_seed(5)
    policy = ActorCritic(layout_for(OBS), family_for(SPACES[kind]), Separate())
    cfg = TRPOConfig(**COMMON, n_critic_updates=2)
    agent = agents.trpo.TRPO(cfg, policy, torch.Generator().manual_seed(0))
    critic = [p.detach().clone() for p in policy.value_parameters()]
    batch = rollout(policy, torch.Generator().manual_seed(6))
    m = agent.update(batch)
    assert m["trpo/accepted"] == 1.0
    assert 0 < m["kl/forward_mean"] <= cfg.target_kl
    assert all(
        not torch.equal(a, b) for a, b in zip(critic, policy.value_parameters(), strict=True)
    )


def test_trpo_refuses_a_network_whose_latents_share_parameters():
    policy = ActorCritic(layout_for(OBS), family_for(SPACES["categorical"]), SharedTrunk())
    with pytest.raises(UserError, match="separate policy and value networks.*extractor.trunk.0"):
        agents.trpo.TRPO(TRPOConfig(**COMMON), policy, torch.Generator())


def test_backward_accumulates_into_the_flat_gradient_it_was_given():
    """autograd adds into the .grad views of flat_parameters, never replacing them."""
    policy = ActorCritic(layout_for(OBS), family_for(SPACES["gaussian"]), Separate())
    flat = flat_parameters(list(policy.parameters()))
    obs = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(2):
            params, values, cache = policy.forward_train(obs)
            policy.backward(cache, torch.ones_like(params), torch.ones_like(values))
    loss = sum(x.sum() for x in policy(obs))
    once = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(policy.parameters()))])
    torch.testing.assert_close(flat.grad, 2 * once)
    assert all(p.grad.data_ptr() >= flat.grad.data_ptr() for p in policy.parameters())


def test_checkpoints_with_the_earlier_parameter_names_still_load():
    policy = MlpActorCritic(layout_for(OBS, flat=True), family_for(SPACES["categorical"]), (8,))
    earlier = {k.removeprefix("extractor."): v + 1 for k, v in policy.state_dict().items()}
    assert "pi_body.0.weight" in earlier
    policy.load_state_dict(earlier)
    assert torch.equal(policy.extractor.pi_body[0].weight, earlier["pi_body.0.weight"])
