"""The closed-form derivatives the update uses instead of autograd, checked against autograd:
the distribution families' log-prob, entropy and KL gradients, every activation's forms and
backward, backpropagation by hand through the networks, and PPO's whole minibatch gradient
for every variant of its loss."""

import dataclasses
import typing

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_trust.agents.ppo import PPO
from rl_trust.config import AgentConfig, PPOConfig
from rl_trust.nets.encoders import ACTIVATIONS
from rl_trust.nets.families import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    Family,
    MultiCategorical,
    family_for,
)
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import layout_for
from rl_trust.optim import flat_parameters
from rl_trust.rollout import Batch

pytestmark = pytest.mark.usefixtures("float64")  # numbers compared in double (conftest)

FAMILIES = [
    Categorical((4,)),
    MultiCategorical((3, 2)),
    Bernoulli((3,)),
    DiagGaussian((2,)),
]
OBS5 = layout_for(gym.spaces.Box(-1, 1, (5,)), flat=True)
SPACES = {
    "categorical": gym.spaces.Discrete(4),
    "multicategorical": gym.spaces.MultiDiscrete([3, 2]),
    "bernoulli": gym.spaces.MultiBinary(3),
    "gaussian": gym.spaces.Box(-1.0, 1.0, (2,)),
}


def autograd_of(f, x: torch.Tensor) -> torch.Tensor:
    """∂/∂x of a per-state function (each row of f(x) depends on its own row of x only)."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


def sample_pair(fam: Family, g: torch.Generator, n: int = 32):
    old = torch.randn(n, fam.n_params, generator=g)
    new = old + 0.5 * torch.randn(n, fam.n_params, generator=g)
    if fam.has_log_std:  # one log-std per dimension: columns shared by all states
        old[:, 2:], new[:, 2:] = old[0, 2:] * 0.5, new[0, 2:] * 0.5
    return old, new, fam.sample(old, generator=g)


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_family_for_maps_each_space_to_its_family(fam):
    space = SPACES[fam.name]
    got = family_for(space)
    assert type(got) is type(fam) and got.sizes == fam.sizes
    log_std_columns = got.action_dim if got.has_log_std else 0  # ActorCritic appends them
    assert got.n_head_outputs + log_std_columns == got.n_params
    if isinstance(got, DiagGaussian):
        assert np.array_equal(got.low, space.low) and np.array_equal(got.high, space.high)


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_closed_form_derivatives_match_autograd(fam):
    old, new, actions = sample_pair(fam, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        fam.log_prob_grad(new, actions), autograd_of(lambda x: fam.log_prob(x, actions), new)
    )
    torch.testing.assert_close(fam.entropy_grad(new), autograd_of(fam.entropy, new))
    torch.testing.assert_close(fam.kl_grad(old, new), autograd_of(lambda x: fam.kl(old, x), new))
    torch.testing.assert_close(
        fam.kl_grad(old, new, reverse=True), autograd_of(lambda x: fam.kl(x, old), new)
    )


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_agrees_in_all_its_forms(name):
    """The module (autograd engine), the torch function and the backward from the output
    (manual engine's update) and the numpy function (its rollout sampler) are one function:
    an activation registered without all its parts, or with parts that disagree, fails."""
    act = ACTIVATIONS[name]
    g = torch.Generator().manual_seed(5)
    z = (3 * torch.randn(64, 7, generator=g)).requires_grad_(True)
    h = act.module()(z)
    torch.testing.assert_close(act.torch_fn(z), h)
    torch.testing.assert_close(torch.from_numpy(act.numpy_fn(z.detach().numpy())), h)
    z32 = z.detach().numpy().astype(np.float32)  # the sampler's dtype, kept
    assert act.numpy_fn(z32).dtype == np.float32
    np.testing.assert_allclose(act.numpy_fn(z32), act.torch_fn(torch.from_numpy(z32)), rtol=1e-6)
    d_h = torch.randn(64, 7, generator=g)
    (expected,) = torch.autograd.grad(h, z, d_h)
    with torch.no_grad():
        torch.testing.assert_close(act.backward_from_output(d_h, h), expected)


def test_the_config_offers_exactly_the_registered_activations():
    choices = typing.get_args(typing.get_type_hints(AgentConfig)["activation"])
    assert sorted(choices) == sorted(ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_backpropagation_by_hand_matches_autograd(kind, activation):
    torch.manual_seed(1)
    net = MlpActorCritic(OBS5, family_for(SPACES[kind]), (16, 8), activation)
    flat = flat_parameters(list(net.parameters()))
    obs = torch.randn(40, 5)
    d_params = torch.randn(40, net.family.n_params)
    d_values = torch.randn(40)

    loss = (net.dist_params(obs) * d_params).sum() + (net.value(obs) * d_values).sum()
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))])
    with torch.no_grad():
        params, values, cache = net.forward_train(obs)
        torch.testing.assert_close(params, net.dist_params(obs))
        torch.testing.assert_close(values, net.value(obs))
        flat.grad.zero_()
        net.backward(cache, d_params, d_values)
    torch.testing.assert_close(flat.grad, expected)
    assert flat.grad.abs().min() >= 0 and flat.grad.norm() > 0


def minibatch(net: MlpActorCritic, g: torch.Generator, n: int = 48) -> Batch:
    obs = torch.randn(n, 5, generator=g)
    with torch.no_grad():
        old = net.dist_params(obs) + 0.3 * torch.randn(n, net.family.n_params, generator=g)
        if net.family.has_log_std:
            old[:, 2:] = net.log_std.detach() + 0.2
        actions = net.family.sample(old, generator=g)
        values = net.value(obs) + 0.5 * torch.randn(n, generator=g)
    return Batch(
        obs=obs,
        actions=actions,
        log_probs=net.family.log_prob(old, actions),
        values=values,
        dist_params=old,
        advantages=torch.randn(n, generator=g),
        returns=values + torch.randn(n, generator=g),
    )


VARIANTS = {
    "penalty": {"clip": False, "kl_penalty": "adaptive"},
    "clip": {"clip": True, "kl_penalty": "off"},
    "clip+penalty+entropy": {"clip": True, "kl_penalty": "fixed", "ent_coef": 0.05},
    "reverse penalty": {"clip": False, "kl_penalty": "fixed", "kl_direction": "reverse"},
    "spread penalty": {"clip": False, "kl_penalty": "fixed", "kl_beta": 2.0, "kl_spread": 3.0},
    "reverse spread penalty": {
        "clip": False,
        "kl_penalty": "fixed",
        "kl_direction": "reverse",
        "kl_spread": 0.5,
        "kl_target": 0.05,
    },
    "value clip": {"clip_range_vf": 0.2, "vf_coef": 0.7, "clip_range": 0.1},
    "per-state cap": {"clip": False, "kl_penalty": "fixed", "kl_state_cap": 1.0},
    "per-state cap, clip, spread": {
        "clip": True,
        "kl_penalty": "fixed",
        "kl_spread": 1.0,
        "kl_state_cap": 0.5,
        "kl_target": 0.05,
    },
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["categorical", "multicategorical", "bernoulli", "gaussian"])
def test_ppo_minibatch_gradient_is_the_gradient_of_its_loss(kind, variant):
    """PPO's closed-form gradient, backpropagated by hand, equals autograd of the loss the
    docstring states, for every family and loss variant (ratios far enough from 1 that the
    clipping is active on some states)."""
    torch.manual_seed(2)
    net = MlpActorCritic(OBS5, family_for(SPACES[kind]), (16, 16))
    cfg = PPOConfig(**VARIANTS[variant])
    agent = PPO(cfg, net, torch.Generator().manual_seed(0))
    mb = minibatch(net, torch.Generator().manual_seed(3))

    params, values = net.dist_params(mb.obs), net.value(mb.obs)
    terms = agent.objective(mb, params, values)
    if cfg.clip:
        assert 0 < terms["clip_fraction"] < 1  # both sides of the clip are exercised
    if cfg.kl_state_cap is not None:
        assert 0 < terms["capped"] < 1  # some samples capped, some not
    loss = agent.loss(terms)
    expected = torch.autograd.grad(loss, list(net.parameters()))
    expected = torch.cat([g.reshape(-1) for g in expected])

    with torch.no_grad():
        params, values, cache = net.forward_train(mb.obs)
        log_ratio = net.family.log_prob(params, mb.actions) - mb.log_probs
        agent.weights.grad.zero_()
        net.backward(cache, *agent.gradient(mb, params, values, log_ratio))
    torch.testing.assert_close(agent.weights.grad, expected)


def test_minibatch_helpers_cover_the_batch_once():
    g = torch.Generator().manual_seed(4)
    b = Batch(*(torch.arange(10.0).reshape(10, 1) * k for k in range(1, 9)))  # (masks too)
    shuffled = b.shuffled(g)
    parts = list(shuffled.minibatches(4))
    assert [len(p) for p in parts] == [4, 4, 2]
    back = Batch.cat(parts)
    assert torch.equal(back.returns, shuffled.returns)  # the minibatches in the epoch's order
    assert sorted(back.obs.reshape(-1).tolist()) == list(np.arange(10.0))
    assert not torch.equal(back.obs, b.obs)  # shuffled
    for k, field in enumerate(dataclasses.fields(Batch), start=1):  # rows stay aligned
        assert torch.equal(getattr(back, field.name), back.obs * k)


def test_per_state_cap_stops_only_samples_past_it_in_their_advantages_direction():
    """kl_state_cap c: a sample is capped when its state's KL exceeds c·d_targ and its ratio
    has moved the way its advantage pushes; a state past the cap whose ratio moved against
    its advantage still pulls back, and nothing is capped without a cap."""
    net = MlpActorCritic(OBS5, family_for(SPACES["categorical"]), (16, 16))
    agent = PPO(PPOConfig(kl_state_cap=2.0, kl_target=0.01), net, torch.Generator())
    kl = torch.tensor([0.03, 0.03, 0.03, 0.03, 0.01, 0.01])  # past 2·0.01 or not
    ratio = torch.tensor([1.2, 0.8, 1.2, 0.8, 1.2, 0.8])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    assert agent.capped(kl, ratio, adv).tolist() == [True, True, False, False, False, False]
    uncapped = PPO(PPOConfig(), net, torch.Generator())
    assert not uncapped.capped(kl, ratio, adv).any()
