"""Invalid-action masking (issue 31): the masked distributions of every family that takes
masks against closed forms over the valid choices and against autograd, in both engines;
PPO's gradient and TRPO's Fisher products and line search under masks; where masks come
from and the check they pass; the config; training, evaluation, predict and the command
line never taking an invalid action (counted by rl_trust/InvalidCount-v0); masked training
learning rl_trust/MaskedCorridor-v0 in fewer steps than unmasked; the MaskablePPO adapter."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import cli, events, scalars
from test_cli import layout_of

import rl_trust
from rl_trust import config
from rl_trust import tags as T
from rl_trust.agents.ppo import PPO
from rl_trust.agents.trpo import TRPO
from rl_trust.benchmark import matrix, sb3
from rl_trust.config import PPOConfig, TRPOConfig
from rl_trust.envs import Normalizer, masked, masks
from rl_trust.envs.sync import SyncVectorEnv
from rl_trust.errors import MaskError, UserError
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.encoders import MlpExtractor
from rl_trust.nets.families import Bernoulli, Categorical, Family, MultiCategorical, family_for
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import layout_for
from rl_trust.optim import flat_parameters
from rl_trust.rollout import Batch, Collector

FAMILIES = [Categorical((5,)), MultiCategorical((3, 4)), Bernoulli((4,))]
SPACES = {
    "categorical": gym.spaces.Discrete(5),
    "multicategorical": gym.spaces.MultiDiscrete([3, 4]),
    "bernoulli": gym.spaces.MultiBinary(4),
}
OBS5 = layout_for(gym.spaces.Box(-1, 1, (5,)), flat=True)


def random_masks(fam: Family, n: int, g: torch.Generator) -> torch.Tensor:
    """Masks allowing something in every component (every bit: 0, 1 or both)."""
    m = torch.rand(n, fam.mask_size, generator=g) < 0.5
    if isinstance(fam, Bernoulli):
        m[:, 0::2] |= ~m[:, 1::2]  # bits forced to 0, forced to 1, and free
        return m
    start = 0
    for k in fam.sizes:
        m[torch.arange(n), start + torch.randint(k, (n,), generator=g)] = True
        start += k
    return m


# ------------------------------------------------------------------ the reference: by hand


def reference_parts(fam: Family, x: torch.Tensor, mask: torch.Tensor, i: int):
    """State i's distribution as independent categoricals over the valid choices only:
    a list of (log-probabilities over the valid choices, their indices), differentiable in x."""
    parts = []
    if isinstance(fam, Bernoulli):
        for bit in range(fam.sizes[0]):
            logits = torch.stack([torch.zeros_like(x[i, bit]), x[i, bit]])  # P(1) = σ(x)
            valid = torch.nonzero(mask[i, 2 * bit : 2 * bit + 2]).reshape(-1)
            parts.append((logits[valid].log_softmax(-1), valid))
        return parts
    start = 0
    for k in fam.sizes:
        valid = torch.nonzero(mask[i, start : start + k]).reshape(-1)
        parts.append((x[i, start : start + k][valid].log_softmax(-1), valid))
        start += k
    return parts


def reference(fam, what: str, x, mask, other=None, actions=None) -> torch.Tensor:
    """log-prob / entropy / KL(x‖other) / KL(other‖x) / invalid share, per state, from
    reference_parts: nothing of the family's own code."""
    out = []
    for i in range(len(x)):
        parts = reference_parts(fam, x, mask, i)
        if what == "log_prob":
            value = 0.0
            for c, (logp, valid) in enumerate(parts):
                a = int(actions[i, c])
                value = value + logp[(valid == a).nonzero()[0, 0]]
        elif what == "entropy":
            value = sum(-(lp.exp() * lp).sum() for lp, _ in parts)
        else:
            theirs = reference_parts(fam, other, mask, i)
            pairs = zip(parts, theirs, strict=True)
            if what == "kl":  # KL(x‖other)
                value = sum((lp.exp() * (lp - lq)).sum() for (lp, _), (lq, _) in pairs)
            else:  # KL(other‖x)
                value = sum((lq.exp() * (lq - lp)).sum() for (lp, _), (lq, _) in pairs)
        out.append(value)
    return torch.stack([torch.as_tensor(v, dtype=x.dtype) for v in out])


def reference_share(fam, x, mask) -> torch.Tensor:
    if isinstance(fam, Bernoulli):
        p1 = torch.sigmoid(x)
        ok = mask[:, 0::2] * (1 - p1) + mask[:, 1::2] * p1
        return 1 - ok.prod(-1)
    valid, start = 1.0, 0
    for k in fam.sizes:
        p = x[:, start : start + k].softmax(-1)
        valid = valid * (p * mask[:, start : start + k]).sum(-1)
        start += k
    return 1 - valid


def grad_of(f, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


def pair(fam: Family, n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(n, fam.n_params, generator=g)
    new = old + 0.7 * torch.randn(n, fam.n_params, generator=g)
    mask = random_masks(fam, n, g)
    actions = fam.sample(fam.masked(old, mask), generator=g)
    return old, new, mask, actions


# ------------------------------------------------------------------ the families


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_masked_forms_are_the_closed_forms_over_the_valid_choices(fam):
    old, new, mask, actions = pair(fam)
    m_old, m_new = fam.masked(old, mask), fam.masked(new, mask)
    torch.testing.assert_close(
        fam.log_prob(m_new, actions), reference(fam, "log_prob", new, mask, actions=actions)
    )
    torch.testing.assert_close(fam.entropy(m_new), reference(fam, "entropy", new, mask))
    torch.testing.assert_close(fam.kl(m_old, m_new), reference(fam, "kl", old, mask, new))
    torch.testing.assert_close(fam.kl(m_new, m_old), reference(fam, "kl", new, mask, old))
    torch.testing.assert_close(fam.invalid_share(new, mask), reference_share(fam, new, mask))
    share, free = fam.invalid_share(new, mask), mask.all(-1)
    assert (share[~free] > 0).all() and torch.allclose(share[free], torch.zeros(1))
    unmasked = fam.kl(old, new)  # the masks change the numbers: the check is not vacuous
    assert not torch.allclose(unmasked, fam.kl(m_old, m_new))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_masked_derivatives_match_autograd_of_the_reference(fam):
    """The closed forms at the masked parameters, carried back by masked_grad, are the
    derivatives (by autograd) of the by-hand distributions over the valid choices."""
    old, new, mask, actions = pair(fam, seed=1)
    m_old, m_new = fam.masked(old, mask), fam.masked(new, mask)
    checks = [
        (
            fam.log_prob_grad(m_new, actions),
            lambda x: reference(fam, "log_prob", x, mask, None, actions),
        ),
        (fam.entropy_grad(m_new), lambda x: reference(fam, "entropy", x, mask)),
        (fam.kl_grad(m_old, m_new), lambda x: reference(fam, "kl_rev", x, mask, old)),
        (fam.kl_grad(m_old, m_new, reverse=True), lambda x: reference(fam, "kl", x, mask, old)),
    ]
    for closed, f in checks:
        torch.testing.assert_close(fam.masked_grad(closed, mask), grad_of(f, new))
    # and autograd through `masked` itself agrees (both engines' chain rule)
    torch.testing.assert_close(
        fam.masked_grad(fam.entropy_grad(m_new), mask),
        grad_of(lambda x: fam.entropy(fam.masked(x, mask)), new),
    )


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_no_sampler_draws_an_invalid_choice_and_the_draws_follow_the_masked_policy(fam):
    g = torch.Generator().manual_seed(2)
    n = 8
    params = 3 * torch.randn(n, fam.n_params, generator=g)  # peaked: invalid ones favoured
    mask = random_masks(fam, n, g)
    rng = np.random.default_rng(0)
    reps = 3000
    rows = np.repeat(params.numpy(), reps, 0)
    masks_rep = np.repeat(mask.numpy(), reps, 0)
    drawn = fam.sample_numpy(rows, rng, masks_rep)
    m = fam.masked(params, mask)
    torch_drawn = fam.sample(fam.masked(torch.from_numpy(rows), torch.from_numpy(masks_rep)), g)
    for actions in (torch.from_numpy(drawn), torch_drawn, fam.mode(m)):
        rep = masks_rep if len(actions) > n else mask.numpy()
        assert allowed(fam, actions.numpy(), rep).all()
    # the numpy sampler's frequencies are the masked distribution's
    logp = fam.log_prob(m.repeat_interleave(reps, 0), torch.from_numpy(drawn))
    if isinstance(fam, Categorical):
        for i in range(n):
            counts = np.bincount(drawn[i * reps : (i + 1) * reps, 0].astype(int), minlength=5)
            np.testing.assert_allclose(counts / reps, m[i].softmax(-1).numpy(), atol=0.04)
    assert torch.isfinite(logp).all()


def allowed(fam: Family, actions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, whether the action is one the mask allows."""
    if isinstance(fam, Bernoulli):
        a = actions.astype(bool)
        return np.where(a, mask[:, 1::2], mask[:, 0::2]).all(1)
    ok, start = np.ones(len(actions), bool), 0
    for c, k in enumerate(fam.sizes):
        ok &= mask[np.arange(len(actions)), start + actions[:, c].astype(int)]
        start += k
    return ok


def test_an_invalid_logit_gets_exactly_no_probability_and_no_nan():
    fam = Categorical((4,))
    logits = torch.tensor([[50.0, 0.0, -3.0, 1.0]])
    mask = torch.tensor([[False, True, False, True]])
    m = fam.masked(logits, mask)
    p = m.softmax(-1)
    assert p[0, 0] == 0 and p[0, 2] == 0 and torch.isclose(p.sum(), torch.tensor(1.0))
    for value in (fam.entropy(m), fam.kl(m, m), fam.entropy_grad(m), fam.kl_grad(m, m, True)):
        assert torch.isfinite(value).all()
    assert fam.masked(logits, None) is logits  # unmasked: the parameters themselves


# ------------------------------------------------------------------ PPO, both engines


def networks(fam: Family):
    torch.manual_seed(3)
    manual = MlpActorCritic(OBS5, fam, (16, 16))
    torch.manual_seed(3)
    autograd = ActorCritic(OBS5, fam, MlpExtractor(5, (16, 16), "tanh"))
    return {"manual": manual, "autograd": autograd}


def masked_minibatch(net, g: torch.Generator, n: int = 40) -> Batch:
    fam = net.family
    obs = torch.randn(n, 5, generator=g)
    mask = random_masks(fam, n, g)
    with torch.no_grad():
        old = fam.masked(
            net.dist_params(obs) + 0.4 * torch.randn(n, fam.n_params, generator=g), mask
        )
        actions = fam.sample(old, generator=g)
        values = net.value(obs) + 0.5 * torch.randn(n, generator=g)
    return Batch(
        obs=obs,
        actions=actions,
        log_probs=fam.log_prob(old, actions),
        values=values,
        dist_params=old,
        advantages=torch.randn(n, generator=g),
        returns=values + torch.randn(n, generator=g),
        masks=mask,
    )


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("engine", ["manual", "autograd"])
@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_masked_ppo_gradient_is_the_gradient_of_its_loss_in_both_engines(fam, engine):
    """Every term of the loss (clipped surrogate, both KL penalties, entropy) on the masked
    distributions: the closed-form gradient, through either engine's backward, equals
    autograd of the loss through the masking."""
    for kl_direction in ("forward", "reverse"):
        net = networks(fam)[engine]
        cfg = PPOConfig(clip=True, kl_penalty="fixed", ent_coef=0.05, kl_direction=kl_direction)
        agent = PPO(cfg, net, torch.Generator().manual_seed(0))
        mb = masked_minibatch(net, torch.Generator().manual_seed(4))
        params = fam.masked(net.dist_params(mb.obs), mb.masks)
        loss = agent.loss(agent.objective(mb, params, net.value(mb.obs)))
        expected = torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))]
        )
        with torch.no_grad():
            params, values, cache = net.forward_train(mb.obs)
            params = fam.masked(params, mb.masks)
            log_ratio = fam.log_prob(params, mb.actions) - mb.log_probs
            agent.weights.grad.zero_()
            net.backward(cache, *agent.gradient(mb, params, values, log_ratio))
        torch.testing.assert_close(agent.weights.grad, expected)


@pytest.mark.parametrize("fam", FAMILIES[:1], ids=lambda f: f.name)
def test_both_engines_take_the_same_masked_ppo_update(fam):
    nets = networks(fam)
    out = {}
    for name, net in nets.items():
        agent = PPO(PPOConfig(batch_size=20, n_epochs=2), net, torch.Generator().manual_seed(5))
        batch = masked_minibatch(net, torch.Generator().manual_seed(6))
        metrics = agent.update(batch)
        out[name] = (flat_parameters(list(net.parameters())).detach().clone(), metrics)
    torch.testing.assert_close(out["manual"][0], out["autograd"][0], rtol=1e-4, atol=1e-5)
    kl = [out[k][1][T.KL_FORWARD_MEAN] for k in out]
    assert kl[0] == pytest.approx(kl[1], rel=1e-3) and kl[0] > 0


# ------------------------------------------------------------------ TRPO


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_trpo_fisher_product_and_line_search_use_the_masked_kl(fam):
    torch.manual_seed(7)
    net = MlpActorCritic(OBS5, fam, (8, 8))
    agent = TRPO(TRPOConfig(cg_damping=0.0), net, torch.Generator().manual_seed(0))
    batch = masked_minibatch(net, torch.Generator().manual_seed(8), n=24)
    with torch.no_grad():  # the rollout policy is the current one (as at update time)
        batch.dist_params = fam.masked(net.dist_params(batch.obs), batch.masks)
        batch.log_probs = fam.log_prob(batch.dist_params, batch.actions)
    params = net.policy_parameters()
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(9))
    _, fvp, _ = agent.gradient_and_fisher(batch, batch.advantages)
    # the Hessian of the by-hand mean KL over the valid choices, at θ_old, times v
    kl = reference(fam, "kl", batch.dist_params, batch.masks, net.dist_params(batch.obs)).mean()
    grads = torch.autograd.grad(kl, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    hv = torch.autograd.grad(flat @ v, params)
    torch.testing.assert_close(fvp(v), torch.cat([h.reshape(-1) for h in hv]))
    # the unmasked Fisher is another matrix: the check is not vacuous
    with torch.no_grad():
        unmasked = net.dist_params(batch.obs)
    plain = TRPO(TRPOConfig(cg_damping=0.0), net, torch.Generator().manual_seed(0))
    _, fvp_plain, _ = plain.gradient_and_fisher(
        Batch(**{**batch.__dict__, "masks": None, "dist_params": unmasked}), batch.advantages
    )
    assert not torch.allclose(fvp_plain(v), fvp(v))
    # the step the line search accepts keeps the by-hand masked KL within δ
    agent = TRPO(TRPOConfig(), net, torch.Generator().manual_seed(0))
    metrics = agent.update(batch)
    assert metrics[T.TRPO_ACCEPTED] == 1.0, metrics[T.TRPO_REJECT_REASON]
    with torch.no_grad():
        after = reference(fam, "kl", batch.dist_params, batch.masks, net.dist_params(batch.obs))
    assert metrics[T.KL_FORWARD_MEAN] == pytest.approx(float(after.mean()), rel=1e-6)
    assert 0 < after.mean() <= agent.cfg.target_kl + 1e-12


# ------------------------------------------------------------------ where masks come from


def vec(env_id: str, n: int = 2, **kwargs) -> SyncVectorEnv:
    return SyncVectorEnv([lambda: gym.make(env_id, **kwargs)] * n)


def test_masks_come_from_the_method_first_then_from_info():
    fam = Categorical((5,))
    env = vec("rl_trust/InvalidCount-v0")
    _, info = env.reset(seed=0)
    found = masks.for_vector(env, info, "auto", fam, "'m'")
    assert found.source == "method" and info == {}
    expected = np.stack([e.unwrapped.action_masks() for e in env.envs])
    np.testing.assert_array_equal(found.read(info), expected)

    env = vec("rl_trust/InvalidCountInfo-v0")
    _, info = env.reset(seed=0)
    found = masks.for_vector(env, info, "auto", fam, "'i'")
    assert found.source == "info"
    expected = np.stack([e.unwrapped.action_mask() for e in env.envs]).astype(bool)
    np.testing.assert_array_equal(found.read(info), expected)

    class Both(gym.Wrapper):  # a method and an info that disagree: the method wins
        def reset(self, **kw):
            obs, _ = self.env.reset(**kw)
            return obs, {"action_mask": np.ones(5, bool)}

    env = SyncVectorEnv([lambda: Both(gym.make("rl_trust/InvalidCount-v0"))] * 2)
    _, info = env.reset(seed=0)
    found = masks.for_vector(env, info, "auto", fam, "'both'")
    assert found.source == "method"
    assert not found.read(info).all()

    cartpole = vec("CartPole-v1")
    _, info = cartpole.reset(seed=0)
    assert masks.for_vector(cartpole, info, "auto", Categorical((2,)), "'c'") is None
    with pytest.raises(MaskError, match="provides no action masks"):
        masks.for_vector(cartpole, info, "on", Categorical((2,)), "'CartPole-v1'")
    on_box = masks.for_vector
    pendulum = vec("Pendulum-v1")
    _, info = pendulum.reset(seed=0)
    fam_box = family_for(pendulum.single_action_space)
    assert on_box(pendulum, info, "auto", fam_box, "'p'") is None
    with pytest.raises(MaskError, match="takes no masks"):
        on_box(pendulum, info, "on", fam_box, "'Pendulum-v1'")
    assert masks.for_vector(env, info, "off", fam, "'both'") is None


@pytest.mark.parametrize("space", ["discrete", "multibinary"])
def test_the_rollout_stores_each_states_mask_and_the_masked_rollout_policy(space):
    """Over episode ends (autoreset): each step's mask is its state's (InvalidCount observes
    its own mask), the actions are allowed, and π_old is stored masked."""
    env = vec("rl_trust/InvalidCount-v0", n=3, space=space)
    fam = family_for(env.single_action_space)
    torch.manual_seed(0)
    policy = MlpActorCritic(layout_for(env.single_observation_space, flat=True), fam)
    normalizer = Normalizer(
        (5,), 3, obs=False, reward=False, gamma=0.99, clip_obs=10.0, clip_reward=10.0
    )
    collector = Collector(env, policy, normalizer, 45, 0.99, 0.95, 0, "auto", "'x'")
    batch = collector.collect()
    state_masks = masks.Masks(fam, env.single_action_space, len(batch), "", "x")
    expected = state_masks.check((batch.obs > 0.5).numpy())  # (MultiBinary: as pairs)
    np.testing.assert_array_equal(batch.masks.numpy(), expected)
    assert allowed(fam, batch.actions.numpy(), expected).all()
    with torch.no_grad():
        raw = policy.evaluate(batch.obs)[0]
    torch.testing.assert_close(batch.dist_params, fam.masked(raw, batch.masks))
    torch.testing.assert_close(batch.log_probs, fam.log_prob(batch.dist_params, batch.actions))
    share = fam.invalid_share(raw, batch.masks).mean().item()
    assert collector.invalid_share == pytest.approx(share) and share > 0.1


@pytest.mark.parametrize(
    "raw, why",
    [
        (np.ones((2, 6), bool), "shape \\(6,\\)"),
        (np.ones((2, 5), np.float32), "dtype float32"),
        (np.full((2, 5), 2, np.int64), "dtype int64"),
        (np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], np.int8), "allows no action \\(00000\\)"),
        ([np.ones(5, bool), np.ones(4, bool)], "shape \\(4,\\)"),
    ],
)
def test_a_bad_mask_stops_with_one_line_naming_the_env_and_the_step(raw, why):
    found = masks.Masks(Categorical((5,)), gym.spaces.Discrete(5), 2, "'Grid-v0'", "info")
    found.step = 1234
    with pytest.raises(MaskError) as e:
        found.read({"action_mask": raw})
    text = str(e.value)
    assert "\n" not in text and "'Grid-v0'" in text and "env step 1234" in text
    assert e.match(why)


def test_mask_layouts_of_multidiscrete_and_multibinary():
    md = masks.Masks(MultiCategorical((3, 4)), gym.spaces.MultiDiscrete([3, 4]), 1, "'m'", "x")
    ok = np.array([[1, 0, 0, 0, 0, 1, 0]], bool)
    np.testing.assert_array_equal(md.check(ok), ok)
    with pytest.raises(MaskError, match="allows no action"):  # the second component: nothing
        md.check(np.array([[1, 0, 0, 0, 0, 0, 0]], bool))
    mb = masks.Masks(Bernoulli((3,)), gym.spaces.MultiBinary(3), 1, "'b'", "x")
    per_bit = mb.check(np.array([[1, 0, 1]], np.int8))  # bit 1 may not be set
    np.testing.assert_array_equal(per_bit, [[1, 1, 1, 0, 1, 1]])
    pairs = np.array([[0, 1, 1, 0, 1, 1]], bool)  # bit 0 must be 1, bit 1 must be 0
    np.testing.assert_array_equal(mb.check(pairs), pairs)
    with pytest.raises(MaskError, match="allows no action"):
        mb.check(np.array([[0, 0, 1, 1, 1, 1]], bool))


# ------------------------------------------------------------------ config


def test_action_masking_reads_yaml_on_and_off_and_is_refused_where_unsupported(tmp_path):
    assert config.load("ppo", "CartPole-v1", {}).env.action_masking == "auto"
    for raw, want in (("on", "on"), ("off", "off"), ("auto", "auto")):
        overrides = config.parse_overrides([f"action_masking={raw}"])  # YAML: on → True
        assert config.load("ppo", "CartPole-v1", overrides).env.action_masking == want
    preset = tmp_path / "grid.yaml"
    preset.write_text("action_masking: off\n")  # a bare off, a boolean to YAML
    cfg = config.load("ppo", "CartPole-v1", {}, env_preset=preset)
    assert cfg.env.action_masking == "off"
    assert config.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg  # written back quoted
    with pytest.raises(UserError, match="action_masking="):
        config.load("ppo", "CartPole-v1", {"action_masking": "yes please"})
    with pytest.raises(UserError, match="envpool takes no invalid-action masks"):
        config.load("ppo", "CartPole-v1", {"action_masking": True, "vectorization": "envpool"})
    with pytest.raises(UserError, match="overlap=true takes no invalid-action masks"):
        config.load(
            "ppo",
            "CartPole-v1",
            {"action_masking": "on", "vectorization": "async", "overlap": True, "n_envs": 2},
        )
    res = cli("config", "--env", "Taxi-v4", "--explain")
    assert res.returncode == 0 and "action_masking" in res.stdout


# ------------------------------------------------------------------ training, eval, predict

CASES = [  # (algo, env, space, env_kwargs)
    ("ppo", "rl_trust/InvalidCount-v0", "discrete", {}),
    ("ppo", "rl_trust/InvalidCountInfo-v0", "discrete", {}),
    ("ppo", "rl_trust/InvalidCount-v0", "multidiscrete", {}),
    ("ppo", "rl_trust/InvalidCountInfo-v0", "multibinary", {}),
    ("ppo", "rl_trust/InvalidCount-v0", "multibinary", {"bit_pairs": True}),
    ("trpo", "rl_trust/InvalidCountInfo-v0", "multidiscrete", {}),
    ("trpo", "rl_trust/InvalidCount-v0", "discrete", {}),
]


@pytest.mark.parametrize("algo, env_id, space, extra", CASES)
def test_no_invalid_action_is_ever_taken_in_training_eval_or_predict(
    tmp_path, algo, env_id, space, extra
):
    cls = rl_trust.TRPO if algo == "trpo" else rl_trust.PPO
    kwargs = {"space": space, **extra}
    shares = []
    model = cls(
        "MlpPolicy",
        env_id,
        env_kwargs=kwargs,
        n_steps=64,
        batch_size=32,
        n_envs=2,
        seed=1,
        eval_every=128,
        eval_episodes=2,
        run_dir=tmp_path / "run",
        verbose=0,
    )
    masked.reset_counts()
    model.learn(256, callback=lambda m, _: shares.append(m.get(T.ROLLOUT_INVALID_ACTION_SHARE)))
    assert masked.COUNTS["steps"] >= 256 + 2 * 20  # training and two evaluations of 20 steps
    assert masked.COUNTS["invalid"] == 0
    assert all(s is not None and 0 < s < 1 for s in shares)  # the policy would have erred
    # predict, one observation and a batch, sampled and deterministic, with the env's masks
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=3)
    fam = model.trainer.learner.agent.policy.family
    for _ in range(30):
        raw = env.unwrapped.action_mask()
        for deterministic in (False, True):
            action, _ = model.predict(obs, deterministic=deterministic, action_masks=raw)
            valid = masks.Masks(fam, env.action_space, 1, "", "x").check([raw])
            assert allowed(fam, fam_actions(fam, action)[None], valid).all()
        obs, *_ = env.step(action)
    batch_obs = np.stack([obs] * 4)
    batch_masks = np.stack([env.unwrapped.action_mask()] * 4)
    actions, _ = model.predict(batch_obs, action_masks=batch_masks)
    assert len(actions) == 4
    assert masked.COUNTS["invalid"] == 0
    model.close()


def fam_actions(fam: Family, action) -> np.ndarray:
    """An env action as the rollout stores it (a row)."""
    return np.atleast_1d(np.asarray(action)).astype(np.float32)


@pytest.mark.parametrize("env_id", ["rl_trust/InvalidCount-v0", "rl_trust/InvalidCountInfo-v0"])
def test_async_envs_give_their_masks_through_call_or_their_stacked_info(env_id):
    """gymnasium's AsyncVectorEnv: the method through call(), the info stacked by env; the
    envs raise on an invalid action (strict) in their own processes."""
    model = rl_trust.PPO(
        "MlpPolicy",
        env_id,
        env_kwargs={"strict": True, "space": "multidiscrete"},
        vectorization="async",
        n_envs=2,
        n_steps=32,
        batch_size=32,
        run_dir=False,
        verbose=0,
    )
    found = model.trainer.learner.collector.masks
    assert found.source == ("method" if "Info" not in env_id else "info")
    model.learn(128)
    assert model.num_timesteps == 128
    model.close()


def test_without_masks_the_counting_env_sees_invalid_actions():
    """The control of the test above: the same training with action_masking=off does send
    invalid actions, and logs no invalid_action_share."""
    shares = []
    model = rl_trust.PPO(
        "MlpPolicy",
        "rl_trust/InvalidCount-v0",
        n_steps=64,
        batch_size=32,
        seed=1,
        action_masking="off",
        run_dir=False,
        verbose=0,
    )
    masked.reset_counts()
    model.learn(128, callback=lambda m, _: shares.append(T.ROLLOUT_INVALID_ACTION_SHARE in m))
    assert masked.COUNTS["invalid"] > 10 and shares == [False, False]
    assert model.trainer.learner.collector.masks is None


def test_predict_refuses_a_bad_mask():
    model = rl_trust.PPO(
        "MlpPolicy", "rl_trust/InvalidCount-v0", n_steps=64, batch_size=32, run_dir=False
    )
    obs = np.ones(5, np.float32)
    with pytest.raises(MaskError, match="predict\\(action_masks=...\\).*allows no action"):
        model.predict(obs, action_masks=np.zeros(5, bool))
    with pytest.raises(MaskError, match="shape \\(3,\\)"):
        model.predict(obs, action_masks=np.ones(3, bool))
    with pytest.raises(MaskError, match="of observation 1"):
        model.predict(np.ones((2, 5), np.float32), action_masks=np.array([[1] * 5, [0] * 5]))
    box = rl_trust.PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, run_dir=False)
    with pytest.raises(MaskError, match="takes no masks"):
        box.predict(np.ones(3, np.float32), action_masks=np.ones(1, bool))


def steps_to_solve(masking: str, budget: int) -> int:
    """Env steps until the mean return of the last episodes reaches 4.5 of 5 (the budget
    when it does not)."""
    solved = []

    def stop(metrics, trainer):
        if metrics.get(T.ROLLOUT_EP_REW_MEAN, 0.0) >= 4.5:
            solved.append(trainer.learner.step)
            return False
        return True

    model = rl_trust.PPO(
        "MlpPolicy",
        "rl_trust/MaskedCorridor-v0",
        preset="ppo-clip",
        env_kwargs={"n_actions": 64, "length": 5},
        action_masking=masking,
        n_steps=256,
        seed=0,
        run_dir=False,
        verbose=0,
    )
    model.learn(budget, callback=stop)
    return solved[0] if solved else budget


def test_masked_training_solves_the_corridor_in_fewer_steps_than_unmasked():
    masked_steps = steps_to_solve("auto", 12_288)
    assert masked_steps < 12_288  # solved
    assert steps_to_solve("off", 2 * masked_steps) > 2 * masked_steps - 1  # not by then


# ------------------------------------------------------------------ the command line


def test_cli_trains_resumes_and_evaluates_without_an_invalid_action(tmp_path):
    """strict=True: the env raises on an invalid action, which would fail the run."""
    run = tmp_path / "run"
    common = ["--set", "n_steps=64", "--set", "batch_size=32", "--no-progress"]
    res = cli(
        "train",
        "--env",
        "rl_trust/InvalidCountInfo-v0",
        "--steps",
        "256",
        "--set",
        "env_kwargs={strict: true, space: multidiscrete}",
        "--set",
        "eval_every=128",
        "--set",
        "eval_episodes=2",
        "--run-dir",
        str(run),
        *common,
    )
    assert res.returncode == 0, res.stderr
    res = cli("resume", str(run), "--steps", "384", "--no-progress")
    assert res.returncode == 0, res.stderr
    for flags in ([], ["--deterministic"]):
        res = cli("eval", str(run), "--episodes", "3", *flags)
        assert res.returncode == 0, res.stderr
        assert json.loads((run / "eval.json").read_text())["mean_return"] == 20.0
    acc = events(run)
    share = scalars(acc, T.ROLLOUT_INVALID_ACTION_SHARE)
    assert len(share) == 6 and all(0 < v < 1 for v in share.values())
    charts = layout_of(acc)  # its chart on the "Trust region" dashboard
    assert [
        "Trust region",
        "multiline",
        [T.exact(T.ROLLOUT_INVALID_ACTION_SHARE)],
    ] in charts.values()
    # the same run without masks would break the strict env: the check is not vacuous
    res = cli(
        "train",
        "--env",
        "rl_trust/InvalidCountInfo-v0",
        "--steps",
        "64",
        "--set",
        "env_kwargs={strict: true}",
        "--set",
        "action_masking=off",
        "--run-dir",
        str(tmp_path / "off"),
        *common,
    )
    assert res.returncode != 0 and "invalid action" in res.stderr


@pytest.mark.parametrize("bad", ["shape", "none"])
def test_cli_stops_on_a_bad_mask_with_one_line(tmp_path, bad):
    res = cli(
        "train",
        "--env",
        "rl_trust/InvalidCountInfo-v0",
        "--steps",
        "256",
        "--set",
        f"env_kwargs={{bad: {bad}, bad_at: 50}}",
        "--set",
        "n_steps=64",
        "--set",
        "batch_size=32",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "rl_trust/InvalidCountInfo-v0" in lines[0]
    assert "env step 50" in lines[0]


def test_cli_refuses_masking_on_where_the_env_has_no_masks(tmp_path):
    res = cli(
        "train",
        "--env",
        "CartPole-v1",
        "--set",
        "action_masking=on",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert res.returncode == 2 and "provides no action masks" in res.stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


# ------------------------------------------------------------------ the benchmark


def test_the_sb3_side_of_a_masked_env_is_maskable_ppo(tmp_path):
    taxi = config.load("ppo-clip", "Taxi-v4", {}).to_dict()
    assert sb3.sb3_kwargs(taxi)[0] == "MaskablePPO"
    off = config.load("ppo-clip", "Taxi-v4", {"action_masking": "off"}).to_dict()
    assert sb3.sb3_kwargs(off)[0] == "PPO"
    assert sb3.sb3_kwargs(config.load("ppo-clip", "CartPole-v1", {}).to_dict())[0] == "PPO"
    env = "rl_trust/MaskedCorridor-v0"
    trials = matrix.matrix(["ppo-clip", "trpo"], [env], 1, 2048)
    by = {(t.library, t.agent): t for t in trials}
    assert by[("sb3", "trpo")].config().agent_name == "ppo-clip"  # MaskablePPO's settings
    assert matrix.sb3_identity(by[("sb3", "trpo")]) == matrix.sb3_identity(by[("sb3", "ppo-clip")])
    assert by[("rl-trust", "trpo")].config().agent.algo == "trpo"
    assert any("MaskablePPO" in c for c in sb3.sb3_caveats(by[("sb3", "trpo")].config().to_dict()))
    # MaskablePPO trains on an env whose masks are in info (the adapter gives it action_masks)
    cfg = config.load(
        "ppo-clip",
        "rl_trust/InvalidCountInfo-v0",
        {"n_steps": 64, "batch_size": 32, "env_kwargs": {"strict": True}},
        128,
    ).to_dict()
    result = sb3.train(cfg)
    assert result["algo"] == "MaskablePPO" and result["steps"] >= 128
