"""The KL math of rl_trust.divergence and of the nets.families.Family classes against independent
references: torch.distributions, closed forms worked by hand, and Monte Carlo over sampled
actions."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from rl_trust import divergence as D
from rl_trust.nets import families as policies
from rl_trust.nets.families import Family

pytestmark = pytest.mark.usefixtures("float64")  # numbers compared in double (conftest)

CAT = policies.Categorical((5,))
MULTI = policies.MultiCategorical((3, 4))
BERN = policies.Bernoulli((3,))
GAUSS = policies.DiagGaussian((2,), np.full(2, -np.inf), np.full(2, np.inf))


def random_params(fam: Family, n: int, g: torch.Generator, spread: float = 1.0):
    x = torch.randn(n, fam.n_params, generator=g, dtype=torch.float64) * spread
    if fam.has_log_std:
        x[:, fam.action_dim :] *= 0.5  # log-std in a sensible range
    return x


def torch_dist(fam: Family, params: torch.Tensor):
    if isinstance(fam, policies.Categorical):
        return Categorical(logits=params)
    if isinstance(fam, policies.Bernoulli):
        return Independent(Bernoulli(logits=params), 1)
    assert isinstance(fam, policies.DiagGaussian), fam
    mean, log_std = params.chunk(2, -1)
    return Independent(Normal(mean, log_std.exp()), 1)


@pytest.mark.parametrize("fam", [CAT, BERN, GAUSS], ids=lambda f: f.name)
def test_kl_entropy_log_prob_match_torch_distributions(fam):
    g = torch.Generator().manual_seed(0)
    p, q = random_params(fam, 256, g), random_params(fam, 256, g)
    P, Q = torch_dist(fam, p), torch_dist(fam, q)
    torch.testing.assert_close(fam.kl(p, q), kl_divergence(P, Q))
    torch.testing.assert_close(fam.kl(q, p), kl_divergence(Q, P))
    torch.testing.assert_close(fam.entropy(p), P.entropy())
    a = P.sample()
    actions = a.reshape(256, -1).to(torch.float64)  # as the rollout stores them
    torch.testing.assert_close(fam.log_prob(p, actions), P.log_prob(a))


def test_multicategorical_is_the_sum_over_components():
    g = torch.Generator().manual_seed(1)
    p, q = random_params(MULTI, 64, g), random_params(MULTI, 64, g)
    parts = zip(p.split([3, 4], -1), q.split([3, 4], -1), strict=True)
    expected = sum(kl_divergence(Categorical(logits=a), Categorical(logits=b)) for a, b in parts)
    torch.testing.assert_close(MULTI.kl(p, q), expected)


def test_gaussian_kl_by_hand_and_asymmetry():
    # KL(N(0,1) ‖ N(0,2²)) = log 2 + 1/8 − 1/2;  KL(N(0,2²) ‖ N(0,1)) = −log 2 + 2 − 1/2
    p = torch.tensor([[0.0, 0.0]])
    q = torch.tensor([[0.0, math.log(2.0)]])
    fam = policies.DiagGaussian((1,))
    forward, reverse = fam.kl(p, q).item(), fam.kl(q, p).item()
    assert forward == pytest.approx(math.log(2) + 1 / 8 - 1 / 2, rel=1e-12)
    assert reverse == pytest.approx(-math.log(2) + 2 - 1 / 2, rel=1e-12)
    assert reverse > 2.5 * forward  # the divergence is not symmetric
    # a mean shift alone: (μ_p − μ_q)² / (2σ_q²), symmetric when σ_p = σ_q
    shifted = torch.tensor([[0.3, math.log(0.5)]])
    same_std = torch.tensor([[0.0, math.log(0.5)]])
    assert fam.kl(shifted, same_std).item() == pytest.approx(0.09 / (2 * 0.25), rel=1e-12)


def test_categorical_kl_by_hand_and_asymmetry():
    p = torch.tensor([[0.9, 0.1]]).log()
    q = torch.tensor([[0.5, 0.5]]).log()
    fam = policies.Categorical((2,))
    by_hand = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert fam.kl(p, q).item() == pytest.approx(by_hand, rel=1e-12)
    assert fam.kl(q, p).item() == pytest.approx(reverse, rel=1e-12)
    assert abs(by_hand - reverse) > 0.1
    assert fam.kl(p, p).item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("fam", [CAT, MULTI, BERN, GAUSS], ids=lambda f: f.name)
def test_exact_kl_is_the_monte_carlo_mean_and_k3_is_within_its_error(fam):
    """Sample a ~ p many times in one state: the sample means of k1 and k3 are unbiased
    estimates of KL(p‖q), within 4 standard errors; k3 is never negative per sample; k2 is
    the biased one (it is close only for nearby distributions, so not checked here)."""
    g = torch.Generator().manual_seed(2)
    p, q = random_params(fam, 1, g), random_params(fam, 1, g, spread=0.7)
    n = 200_000
    P, Q = p.expand(n, -1), q.expand(n, -1)
    actions = fam.sample(P, generator=g)
    logp, logq = fam.log_prob(P, actions), fam.log_prob(Q, actions)
    exact = fam.kl(p, q).item()
    est = D.estimators(logp, logq)
    for name in ("k1", "k3"):
        mean, se = est[name].mean().item(), est[name].std().item() / math.sqrt(n)
        assert abs(mean - exact) < 4 * se + 1e-9, (name, mean, exact, se)
    assert (est["k3"] >= 0).all()
    assert (est["k2"] >= 0).all()


def test_sample_numpy_draws_from_the_same_distribution_as_sample():
    """The rollout samples in numpy: its action frequencies and moments match the family's
    probabilities within 4 standard errors."""
    rng = np.random.Generator(np.random.PCG64(3))
    n = 100_000
    logits = np.array([[0.3, -1.0, 2.0, 0.0, -0.5]], np.float32)
    counts = np.bincount(CAT.sample_numpy(np.repeat(logits, n, 0), rng)[:, 0].astype(int), None, 5)
    probs = torch.softmax(torch.tensor(logits[0], dtype=torch.float64), -1).numpy()
    se = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) < 4 * se)

    bern = np.array([[1.5, -0.2, 0.0]], np.float32)
    ones = BERN.sample_numpy(np.repeat(bern, n, 0), rng).mean(0)
    p1 = 1 / (1 + np.exp(-bern[0].astype(np.float64)))
    assert np.all(np.abs(ones - p1) < 4 * np.sqrt(p1 * (1 - p1) / n))

    gauss = np.array([[0.5, -1.0, math.log(0.3), math.log(2.0)]], np.float32)
    x = GAUSS.sample_numpy(np.repeat(gauss, n, 0), rng)
    std = np.array([0.3, 2.0])
    assert np.all(np.abs(x.mean(0) - [0.5, -1.0]) < 4 * std / math.sqrt(n))
    assert np.all(np.abs(x.std(0) / std - 1) < 4 / math.sqrt(2 * n))


def test_kl_stats_reports_what_it_names():
    g = torch.Generator().manual_seed(4)
    old, new = random_params(GAUSS, 500, g), random_params(GAUSS, 500, g, spread=0.5)
    actions = GAUSS.sample(old, generator=g)
    logp = GAUSS.log_prob(old, actions)
    s = GAUSS.kl_stats(old, new, actions, logp)
    P, Q = torch_dist(GAUSS, old), torch_dist(GAUSS, new)
    forward, reverse = kl_divergence(P, Q), kl_divergence(Q, P)
    assert s["kl/forward_mean"] == pytest.approx(forward.mean().item())
    assert s["kl/forward_max"] == pytest.approx(forward.max().item())
    assert s["kl/forward_p95"] == pytest.approx(np.percentile(forward.numpy(), 95))
    assert s["kl/reverse_mean"] == pytest.approx(reverse.mean().item())
    assert s["kl/entropy"] == pytest.approx(P.entropy().mean().item())
    # cross-entropy H(p, q) = −E_p[log q], by Monte Carlo over many draws per state
    draws = P.sample((4000,))
    cross = -Q.log_prob(draws).mean().item()
    assert s["kl/cross_entropy"] == pytest.approx(cross, rel=0.01)
    logq = GAUSS.log_prob(new, actions)
    assert s["kl/k1"] == pytest.approx((logp - logq).mean().item())
    torch.testing.assert_close(s["kl/forward"], forward)
