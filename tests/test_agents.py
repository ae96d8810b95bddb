"""PPO's update loop and TRPO's step on real batches from CartPole and Pendulum."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rl_trust import agents, config, kl_control
from rl_trust.agents import trpo as trpo_module
from rl_trust.envs import Normalizer, make_vec
from rl_trust.rollout import Collector


def setup(agent: str, env: str = "CartPole-v1", **overrides):
    cfg = config.load(agent, env, {"n_steps": 256, "n_envs": 2, **overrides})
    vec = make_vec(cfg.env, 0)
    a = cfg.agent
    agent_ = agents.build(a, vec.single_observation_space, vec.single_action_space, 0)
    norm = Normalizer(
        vec.single_observation_space.shape,
        2,
        obs=False,
        reward=False,
        gamma=a.gamma,
        clip_obs=10,
        clip_reward=10,
    )
    collector = Collector(vec, agent_.policy, norm, a.n_steps, a.gamma, a.gae_lambda, 0)
    return cfg, agent_, collector


def count_steps(optimizer, record: list, agent):
    step = optimizer.step

    def counted(*args, **kwargs):
        record.append(agent.beta)
        return step(*args, **kwargs)

    optimizer.step = counted


def test_ppo_runs_every_minibatch_without_target_kl():
    cfg, agent, collector = setup("ppo", batch_size=64, n_epochs=3)
    steps: list[float] = []
    count_steps(agent.optimizer, steps, agent)
    m = agent.update(collector.collect())
    assert len(steps) == m["train/grad_steps"] == 3 * (512 // 64)
    assert m["train/early_stopped"] == 0.0 and m["train/epochs"] == 3


def test_ppo_early_stop_happens_before_the_offending_step():
    cfg, agent, collector = setup("ppo-clip", batch_size=64, n_epochs=10, target_kl=1e-9)
    batch = collector.collect()
    steps: list[float] = []
    count_steps(agent.optimizer, steps, agent)
    m = agent.update(batch)
    # the first minibatch sees ratio 1 (KL 0) and steps; the second sees KL > 1.5e-9 and stops
    assert len(steps) == 1 == m["train/grad_steps"] == m["train/n_updates"]
    assert m["train/early_stopped"] == 1.0
    assert m["train/epochs"] == pytest.approx(1 / 8)
    m2 = agent.update(collector.collect())
    assert m2["train/n_updates"] == 1 + m2["train/grad_steps"] == len(steps)


def test_adaptive_rule_on_a_constructed_sequence():
    """Section 4 of the PPO paper with d_targ 0.01: halve below 0.01/1.5, double above
    1.5·0.01, keep inside the band; a non-finite KL says nothing and keeps β."""
    kls = [0.001, 0.02, 0.01, float("nan"), 0.0067, 0.0066, 0.0151, 0.015, float("inf"), 0.03]
    expected = [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 2.0]
    beta, seen = 1.0, []
    for d in kls:
        beta = kl_control.adapt_beta(beta, d, 0.01)
        seen.append(beta)
    assert seen == expected
    assert kl_control.adapt_beta(1.0, 0.5, 0.1, band=2.0, factor=3.0) == 3.0
    assert kl_control.adapt_beta(1.0, 0.04, 0.1, band=2.0, factor=3.0) == pytest.approx(1 / 3)


def test_beta_changes_once_per_update_never_per_minibatch(monkeypatch):
    cfg, agent, collector = setup("ppo-paper", batch_size=64, n_epochs=4, kl_beta=3.0)
    calls: list[tuple[float, float]] = []
    rule = kl_control.adapt_beta

    def spy(beta, d, *args):
        calls.append((beta, d))
        return rule(beta, d, *args)

    monkeypatch.setattr(kl_control, "adapt_beta", spy)
    used: list[float] = []
    count_steps(agent.optimizer, used, agent)
    betas = []
    for _ in range(3):
        m = agent.update(collector.collect())
        betas.append((m["kl/beta"], m["kl/forward_mean"], agent.beta))
    assert len(calls) == 3
    per_update = len(used) // 3
    for i, (logged, d, after) in enumerate(betas):
        assert set(used[i * per_update : (i + 1) * per_update]) == {logged}  # fixed within
        assert after == rule(logged, d, 0.01)  # and moved once, after, by the paper's rule
    assert betas[0][0] == 3.0


def test_fixed_penalty_keeps_beta():
    cfg, agent, collector = setup("ppo-fixed", kl_beta=0.5)
    for _ in range(2):
        assert agent.update(collector.collect())["kl/beta"] == 0.5
    assert agent.beta == 0.5


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_penalty_direction_is_the_one_used(direction):
    cfg, agent, collector = setup("ppo", kl_direction=direction)
    batch = collector.collect()
    old = batch.dist_params[:8]
    new = old + torch.randn(old.shape, generator=torch.Generator().manual_seed(0))
    fam = agent.policy.family
    want = fam.kl(old, new) if direction == "forward" else fam.kl(new, old)
    assert torch.equal(agent.penalty_kl(old, new), want)
    assert not torch.allclose(fam.kl(old, new), fam.kl(new, old))


def test_trpo_rejected_search_leaves_policy_bit_identical(monkeypatch):
    cfg, agent, collector = setup("trpo", env="Pendulum-v1")
    batch = collector.collect()
    before = [p.detach().clone() for p in agent.policy.policy_parameters()]
    monkeypatch.setattr(trpo_module, "line_search", lambda f, kl, s, n: (f(1.0), (None, n))[1])
    m = agent.update(batch)  # the search tried the full step, then rejected everything
    assert m["trpo/accepted"] == 0.0 and m["trpo/reject_reason"] == trpo_module.NO_IMPROVING_STEP
    for b, p in zip(before, agent.policy.policy_parameters(), strict=True):
        assert torch.equal(b, p)
    assert m["kl/forward_mean"] == 0.0


def test_trpo_zero_advantages_are_rejected_by_the_curvature_guard():
    cfg, agent, collector = setup("trpo", normalize_advantage=False)
    batch = collector.collect()
    batch = dataclasses.replace(batch, advantages=torch.zeros_like(batch.advantages))
    before = [p.detach().clone() for p in agent.policy.policy_parameters()]
    m = agent.update(batch)
    assert m["trpo/accepted"] == 0.0
    assert m["trpo/reject_reason"] == trpo_module.NOT_POSITIVE_CURVATURE
    assert all(
        torch.equal(b, p) for b, p in zip(before, agent.policy.policy_parameters(), strict=True)
    )


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_trpo_accepted_step_respects_delta_and_critic_leaves_policy(env):
    cfg, agent, collector = setup("trpo", env=env)
    batch = collector.collect()
    params = agent.policy.policy_parameters()
    m = agent.update(batch)
    assert m["trpo/accepted"] == 1.0
    assert 0 < m["kl/forward_mean"] <= cfg.agent.target_kl
    # the critic was fitted afterwards; it cannot have moved the policy: recompute the KL
    with torch.no_grad():
        new = agent.policy.dist_params(batch.obs)
    assert agent.policy.family.kl(batch.dist_params, new).mean().item() == m["kl/forward_mean"]
    assert params == agent.policy.policy_parameters()


def test_npg_takes_the_full_step_without_line_search():
    cfg, agent, collector = setup("npg")
    m = agent.update(collector.collect())
    assert m["trpo/accepted"] == 1.0 and m["trpo/linesearch_steps"] == 0
    assert m["trpo/step_fraction"] == 1.0
