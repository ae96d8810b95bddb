"""TRPO's math against independent references: dense solves, explicit Hessians, closed forms."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from rl_trust.natural_gradient import (
    conjugate_gradient,
    fisher_vector_product,
    line_search,
    natural_step,
)
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.families import family_for
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import layout_for

pytestmark = pytest.mark.usefixtures("float64")  # numbers compared in double (conftest)


def random_spd(n: int, seed: int, cond: float = 50.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    eig = torch.logspace(0, math.log10(cond), n)
    return q @ torch.diag(eig) @ q.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cg_matches_dense_solve(seed):
    A = random_spd(12, seed)
    b = torch.randn(12, generator=torch.Generator().manual_seed(seed + 10))
    x, iters, residual = conjugate_gradient(lambda v: A @ v, b, max_iters=50, tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)
    assert residual == pytest.approx(float((b - A @ x).norm()), abs=1e-9)
    # In exact arithmetic CG terminates after n iterations; in double, n iterations already
    # solve a well-conditioned system to near machine precision (the count needed to push the
    # residual below 1e-10 depends on the CPU's rounding, so it is not what is asserted).
    x_n, iters_n, _ = conjugate_gradient(lambda v: A @ v, b, max_iters=12, tol=0.0)
    assert iters_n == 12
    torch.testing.assert_close(x_n, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-7)


def test_cg_stops_at_the_tolerance_and_at_max_iters():
    A, b = random_spd(30, 5, cond=1e4), torch.ones(30)
    x, iters, residual = conjugate_gradient(lambda v: A @ v, b, max_iters=100, tol=1e-2)
    assert residual**2 < 1e-2  # stopped because the squared residual fell below tol ...
    x_prev, iters_prev, res_prev = conjugate_gradient(lambda v: A @ v, b, iters - 1, tol=0.0)
    assert res_prev**2 >= 1e-2  # ... and not one iteration later than needed
    assert residual == pytest.approx(float((b - A @ x).norm()), rel=1e-6)
    _, iters, _ = conjugate_gradient(lambda v: A @ v, b, max_iters=3, tol=0.0)
    assert iters == 3


def tiny_policy(space: gym.Space) -> ActorCritic:
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-1, 1, (3,))
    pi = MlpActorCritic(
        layout_for(obs_space, flat=True), family_for(space), net_arch=(4,), log_std_init=-0.3
    ).double()
    with torch.no_grad():  # a non-trivial policy head (the default init is nearly uniform)
        pi.pi_head.weight.mul_(100)
    return pi


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))])
def test_fisher_vector_product_is_the_hessian_of_the_mean_kl(space):
    pi = tiny_policy(space)
    obs = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    params = pi.policy_parameters()
    theta0 = parameters_to_vector(params).detach().clone()
    with torch.no_grad():
        old = pi.dist_params(obs)

    # the explicit Hessian through torch.func.functional_call on a dict of parameters
    name_of = {id(p): n for n, p in pi.named_parameters()}
    names = [name_of[id(p)] for p in params]

    def kl_of(flat):
        chunks = flat.split([p.numel() for p in params])
        values = {n: c.view(p.shape) for n, c, p in zip(names, chunks, params, strict=True)}
        new, _ = torch.func.functional_call(pi, values, (obs,), {}, strict=False)
        return pi.family.kl(old, new).mean()

    hessian = torch.autograd.functional.hessian(kl_of, theta0)
    damping = 0.1
    Fv = fisher_vector_product(pi.family.kl(old, pi.dist_params(obs)).mean(), params, damping)
    for seed in range(3):
        v = torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(Fv(v), hessian @ v + damping * v, rtol=1e-7, atol=1e-9)


def test_line_search_accepts_the_known_fraction():
    # KL(f) = 0.02 f², improvement > 0: f² ≤ 0.5 first holds at 0.8³ = 0.512 (0.8² = 0.64 fails)
    tried = []

    def evaluate(f):
        tried.append(f)
        return 1.0 * f, 0.02 * f * f

    fraction, tries = line_search(evaluate, max_kl=0.01, shrink=0.8, max_iter=10)
    assert fraction == pytest.approx(0.8**2) and tries == 3
    assert tried == pytest.approx([1.0, 0.8, 0.64])


def test_line_search_needs_improvement_and_rejects_nan():
    fraction, tries = line_search(lambda f: (-1.0, 0.0), 0.01, 0.5, 4)
    assert fraction is None and tries == 4
    fraction, _ = line_search(lambda f: (float("nan"), float("nan")), 0.01, 0.5, 4)
    assert fraction is None
    # improvement only for small steps: accepted at 0.5² where it turns positive
    fraction, tries = line_search(lambda f: (0.3 - f, 0.0), 0.01, 0.5, 5)
    assert fraction == 0.25 and tries == 3


def test_natural_step_on_a_gaussian_mean_has_the_closed_form():
    """π_μ = N(μ, σ²I), θ = μ: KL(π_old‖π_μ) = ‖μ − μ_old‖² / 2σ², so F = I/σ², the
    natural gradient is σ²g, and the full step lands exactly on KL = δ."""
    sigma, delta, d = 0.7, 0.01, 5
    gen = torch.Generator().manual_seed(0)
    mu_old = torch.randn(d, generator=gen)
    actions = mu_old + sigma * torch.randn(256, d, generator=gen)
    adv = torch.randn(256, generator=gen)
    mu = mu_old.clone().requires_grad_(True)

    def logp(m):
        return (-0.5 * ((actions - m) / sigma) ** 2).sum(-1)

    surrogate = (torch.exp(logp(mu) - logp(mu_old)) * adv).mean()
    g = torch.autograd.grad(surrogate, mu)[0]
    kl = ((mu - mu_old) ** 2).sum() / (2 * sigma**2)
    step, info = natural_step(g, fisher_vector_product(kl, [mu], 0.0), delta, 10, 1e-30)
    torch.testing.assert_close(step, math.sqrt(2 * delta / (sigma**2 * g @ g)) * sigma**2 * g)
    assert float((step**2).sum() / (2 * sigma**2)) == pytest.approx(delta, rel=1e-10)
    assert info["cg_iters"] == 1  # F is a multiple of I: one CG iteration is exact
    assert info["xFx"] == pytest.approx(float(sigma**2 * g @ g), rel=1e-10)


def test_natural_step_rejects_non_positive_curvature():
    step, info = natural_step(torch.zeros(3), lambda v: torch.zeros_like(v), 0.01, 5, 1e-10)
    assert info["xFx"] == 0.0 and torch.isnan(step).all()
