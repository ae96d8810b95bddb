"""One update of ours against stable-baselines3's own code on identical inputs: the same
weights, the same rollout buffer, the same minibatch order. PPO-clip against SB3's PPO and
TRPO (constraining KL(π‖π_old), as sb3-contrib does) against sb3-contrib's TRPO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from rl_trust import config
from rl_trust.agents.ppo import PPO
from rl_trust.agents.trpo import TRPO
from rl_trust.benchmark.sb3 import sb3_kwargs
from rl_trust.config import PPOConfig, TRPOConfig
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.families import family_for
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import layout_for
from rl_trust.rollout import Batch

N = 256  # one rollout of N steps, one env

# our parameter names → SB3's
NAMES = {
    "extractor.pi_body.0": "mlp_extractor.policy_net.0",
    "extractor.pi_body.2": "mlp_extractor.policy_net.2",
    "extractor.vf_body.0": "mlp_extractor.value_net.0",
    "extractor.vf_body.2": "mlp_extractor.value_net.2",
    "pi_head": "action_net",
    "vf_head": "value_net",
    "log_std": "log_std",
}


def sb3_name(ours: str) -> str:
    module, _, leaf = ours.rpartition(".")
    return NAMES[ours] if not module else f"{NAMES[module]}.{leaf}"


def rollout(model) -> None:
    _, callback = model._setup_learn(N, None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, N)


def twin(model, net_arch=(64, 64), activation="tanh") -> ActorCritic:
    """Our network with SB3's weights."""
    env = model.env
    policy = MlpActorCritic(
        layout_for(env.observation_space, flat=True),
        family_for(env.action_space),
        net_arch,
        activation,
    )
    theirs = dict(model.policy.named_parameters())
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(theirs[sb3_name(name)].reshape(p.shape))
    return policy


def batch_of(model, policy: ActorCritic) -> Batch:
    buf = model.rollout_buffer
    obs = torch.as_tensor(buf.observations.reshape(N, -1), dtype=torch.float32)
    actions = torch.as_tensor(buf.actions.reshape(N, -1), dtype=torch.float32)
    with torch.no_grad():
        params = policy.dist_params(obs)
    batch = Batch(
        obs=obs,
        actions=actions,
        log_probs=torch.as_tensor(buf.log_probs.reshape(N)),
        values=torch.as_tensor(buf.values.reshape(N)),
        dist_params=params,
        advantages=torch.as_tensor(buf.advantages.reshape(N)),
        returns=torch.as_tensor(buf.returns.reshape(N)),
    )
    # the rollout's log-probabilities are what our policy computes on the same weights
    torch.testing.assert_close(policy.family.log_prob(params, actions), batch.log_probs)
    return batch


def assert_same_parameters(policy: ActorCritic, model, rtol: float, names=None) -> None:
    theirs = dict(model.policy.named_parameters())
    for name, p in policy.named_parameters():
        if names is None or name.split(".")[0] in names:
            q = theirs[sb3_name(name)].detach().reshape(p.shape)
            torch.testing.assert_close(p.detach(), q, rtol=rtol, atol=rtol * 1e-2, msg=name)


def same_permutations(monkeypatch, seed: int) -> None:
    """SB3 shuffles with np.random.permutation; make our epochs take the same orders."""
    np.random.seed(seed)
    perms = [np.random.permutation(N) for _ in range(20)]
    np.random.seed(seed)
    order = iter(perms)

    def shuffled(self, generator):
        idx = torch.as_tensor(next(order))
        fields = (getattr(self, f) for f in self.__dataclass_fields__)
        return Batch(*(None if x is None else x[idx] for x in fields))  # (masks: None)

    monkeypatch.setattr(Batch, "shuffled", shuffled)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Hopper-v5"])
def test_ppo_clip_update_matches_sb3_ppo(env_id, monkeypatch):
    from stable_baselines3 import PPO as SB3PPO

    torch.set_num_threads(1)
    model = SB3PPO(
        "MlpPolicy",
        make_vec_env(env_id, 1, seed=0),
        n_steps=N,
        batch_size=64,
        n_epochs=3,
        seed=0,
        device="cpu",
    )
    rollout(model)
    policy = twin(model)
    batch = batch_of(model, policy)
    agent = PPO(
        PPOConfig(clip=True, kl_penalty="off", n_steps=N, batch_size=64, n_epochs=3),
        policy,
        torch.Generator(),
    )
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}

    same_permutations(monkeypatch, seed=7)
    metrics = agent.update(batch)
    model.train()  # SB3 draws the same permutations from numpy's global state
    assert any(not torch.equal(before[n], p) for n, p in policy.named_parameters())
    assert_same_parameters(policy, model, rtol=1e-4)
    logged = model.logger.name_to_value
    for tag in (
        "train/clip_fraction",
        "train/approx_kl",
        "train/value_loss",
        "train/policy_gradient_loss",
    ):
        assert metrics[tag] == pytest.approx(logged[tag], rel=1e-3, abs=1e-7), tag


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Hopper-v5"])
def test_trpo_step_matches_sb3_contrib_trpo(env_id):
    """sb3-contrib through the benchmark's adapter: on Hopper-v5 (3 action dimensions) our
    preset's δ 0.03 and damping 0.3 reach sb3-contrib as 0.01 and 0.1 (it averages the KL
    over action dimensions); untranslated, the steps differ and this test fails."""
    from sb3_contrib import TRPO as SB3TRPO

    torch.set_num_threads(1)
    # one critic minibatch holding the whole rollout: its order cannot matter
    overrides = ["kl_direction=reverse", f"n_steps={N}", f"batch_size={N}", "n_critic_updates=1"]
    cfg = config.load("trpo", env_id, config.parse_overrides(overrides), None, 0)
    _, kwargs, _ = sb3_kwargs(cfg.to_dict())
    model = SB3TRPO(
        "MlpPolicy",
        make_vec_env(env_id, 1, seed=0),
        n_steps=N,
        batch_size=N,
        n_critic_updates=1,
        target_kl=kwargs["target_kl"],
        cg_damping=kwargs["cg_damping"],
        seed=0,
        device="cpu",
    )
    rollout(model)
    policy = twin(model)
    batch = batch_of(model, policy)
    agent = TRPO(cfg.agent, policy, torch.Generator())
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}

    metrics = agent.update(batch)
    model.train()
    assert metrics["trpo/accepted"] == 1.0
    logged = model.logger.name_to_value
    assert logged["train/is_line_search_success"] == 1.0
    # SB3's train/policy_objective: the surrogate after the accepted step
    assert metrics["train/policy_objective"] == pytest.approx(
        logged["train/policy_objective"], rel=1e-4
    )
    moved = [n for n, p in policy.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("pi_") for n in moved) and any(n.startswith("vf_") for n in moved)
    # the natural step and line search, then one Adam step on the critic (ε 1e-5 as SB3's;
    # with torch's default 1e-8 the critic's rarely-moved weights took twice SB3's step)
    assert_same_parameters(policy, model, rtol=1e-4)


def test_trpo_critic_fit_over_many_minibatches_matches_sb3_contrib(monkeypatch):
    """10 critic epochs of 2 minibatches each, in SB3's minibatch order: the same critic."""
    from sb3_contrib import TRPO as SB3TRPO

    from rl_trust.agents import trpo as trpo_module

    torch.set_num_threads(1)
    model = SB3TRPO(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", 1, seed=0),
        n_steps=N,
        batch_size=128,
        n_critic_updates=10,
        seed=0,
        device="cpu",
    )
    rollout(model)
    policy = twin(model)
    batch = batch_of(model, policy)
    cfg = TRPOConfig(kl_direction="reverse", n_steps=N, batch_size=128, n_critic_updates=10)
    agent = TRPO(cfg, policy, torch.Generator())

    np.random.seed(11)
    perms = [np.random.permutation(N) for _ in range(11)]  # SB3: one for the policy step
    np.random.seed(11)
    order = iter(perms[1:])
    monkeypatch.setattr(
        trpo_module.torch, "randperm", lambda n, generator=None: torch.as_tensor(next(order))
    )
    agent.update(batch)
    model.train()
    assert_same_parameters(policy, model, rtol=1e-4)


def sb3_adam_state(model, policy: ActorCritic, params: list[torch.Tensor]) -> dict:
    """SB3's Adam moments (torch.optim.Adam, per parameter) as our flat Adam's state."""
    state, theirs = model.policy.optimizer.state, dict(model.policy.named_parameters())
    names = {id(p): n for n, p in policy.named_parameters()}
    qs = [theirs[sb3_name(names[id(p)])] for p in params]
    return {
        "m": torch.cat([state[q]["exp_avg"].reshape(-1) for q in qs]),
        "v": torch.cat([state[q]["exp_avg_sq"].reshape(-1) for q in qs]),
        "t": int(state[qs[0]]["step"]),
        "lr": model.learning_rate,
    }


MUJOCO_REPLAYS = [(a, e) for e in ("Hopper-v5", "HalfCheetah-v5") for a in ("ppo-clip", "trpo")]


@pytest.mark.parametrize(
    "algo, env_id", [*MUJOCO_REPLAYS, ("ppo-clip-zoo", "Hopper-v5"), ("trpo-zoo", "HalfCheetah-v5")]
)
def test_every_update_of_an_sb3_mujoco_run_is_ours_too(algo, env_id, monkeypatch):
    """SB3 trains on Hopper-v5 (3 action dimensions) and HalfCheetah-v5 (6, no terminal
    states: every episode is truncated at 1000 steps); before each of its 8 updates ours
    updates a twin with the same weights, rollout buffer, Adam moments and minibatch orders,
    through the benchmark's adapter. Later updates start from states a single-update test
    never sees (a moved log-std, a warm optimizer). ppo-clip-zoo: the rl-zoo tuning (ReLU
    256×256, log-std −2, entropy bonus, vf_coef, grad clip 0.7, minibatch 32, 5 epochs).
    trpo-zoo on HalfCheetah: our δ 0.24 and damping 0.6 against sb3-contrib's own 0.04 and 0.1
    (the zoo's numbers, KL averaged over 6 dimensions), 25 CG steps, 20 critic epochs."""
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3 import PPO as SB3PPO

    torch.set_num_threads(1)
    overrides = [f"n_steps={N}", "normalize_obs=false", "normalize_reward=false"]
    if algo.startswith("trpo"):
        overrides.append("kl_direction=reverse")
    if algo == "trpo-zoo":  # (one env here; the preset's two are the same per-env update)
        overrides.append("n_envs=1")
    cfg = config.load(algo, env_id, config.parse_overrides(overrides), None, 0)
    trpo = cfg.agent.algo == "trpo"
    name, kwargs, _ = sb3_kwargs(cfg.to_dict())
    kwargs.update(seed=0)
    Algo = SB3TRPO if name == "TRPO" else SB3PPO
    model = Algo("MlpPolicy", make_vec_env(env_id, 1, seed=0), **kwargs)
    assert float(model.policy.log_std.detach()[0]) == cfg.agent.log_std_init  # policy_kwargs
    diffs, sb3_train = [], model.train

    def train():
        policy = twin(model, cfg.agent.net_arch, cfg.agent.activation)
        batch = batch_of(model, policy)
        agent = (TRPO if trpo else PPO)(cfg.agent, policy, torch.Generator())
        if trpo:
            optimizer, params = agent.critic_optimizer, policy.value_parameters()
        else:
            optimizer, params = agent.optimizer, list(policy.parameters())
        if model.policy.optimizer.state:
            optimizer.load_state_dict(sb3_adam_state(model, policy, params))
        state = np.random.get_state()  # the orders SB3 is about to draw
        orders = iter([torch.as_tensor(np.random.permutation(N)) for _ in range(24)])
        np.random.set_state(state)
        if trpo:
            next(orders)  # sb3-contrib's full-batch policy step draws one first
        with monkeypatch.context() as m:
            m.setattr(torch, "randperm", lambda n, generator=None: next(orders))
            agent.update(batch)
        sb3_train()
        theirs = {n: q.detach() for n, q in model.policy.named_parameters()}
        diffs.append(
            max(
                float(
                    (p.detach() - theirs[sb3_name(n)].reshape(p.shape)).abs().max()
                    / theirs[sb3_name(n)].abs().max()
                )
                for n, p in policy.named_parameters()
            )
        )

    model.train = train
    model.learn(8 * N)
    # PPO agrees to < 4e-6 (dropping the zoo's entropy bonus alone gives 9e-5); TRPO's line
    # search amplifies float32 round-off (3e-4 on Hopper)
    assert len(diffs) == 8 and max(diffs) < (1e-3 if trpo else 1e-5), diffs


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5"])
def test_a_rollout_of_ours_is_sb3s_on_the_same_actions(env_id, monkeypatch):
    """Our collector (lean vector env, Normalizer, bootstrap at time limits, GAE) against SB3's
    collect_rollouts under VecNormalize, both stepping one random action sequence on the same
    weights: HalfCheetah's episodes end by truncation at steps 999 and 1999, Hopper's by
    falls. Observations, values, rewards, advantages and returns agree."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from rl_trust.config import EnvConfig
    from rl_trust.envs import Normalizer, make_vec
    from rl_trust.rollout import Collector

    torch.set_num_threads(1)
    T = 2048
    venv = VecNormalize(make_vec_env(env_id, 1, seed=0), gamma=0.99)
    model = SB3PPO("MlpPolicy", venv, n_steps=T, seed=0, device="cpu")
    actions = np.random.default_rng(1).uniform(-1, 1, (T, 1, venv.action_space.shape[0]))
    actions = actions.astype(np.float32)
    forward, steps = model.policy.forward, iter(actions)

    def sb3_forward(obs, deterministic=False):  # SB3's values and log-probs, our actions
        _, values, _ = forward(obs, deterministic)
        return torch.as_tensor(next(steps)), values, torch.zeros(1)

    monkeypatch.setattr(model.policy, "forward", sb3_forward)
    policy = twin(model)
    _, callback = model._setup_learn(T, None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
    buf = model.rollout_buffer

    env = make_vec(EnvConfig(env_id=env_id, n_envs=1), 0)
    shape = env.single_observation_space.shape
    ours = iter(actions)
    monkeypatch.setattr(policy, "sampler", lambda rng: lambda x: next(ours))
    normalizer = Normalizer(
        shape, 1, obs=True, reward=True, gamma=0.99, clip_obs=10.0, clip_reward=10.0
    )  # VecNormalize's defaults
    collector = Collector(env, policy, normalizer, T, 0.99, 0.95, 0)
    batch = collector.collect()
    ends = np.flatnonzero(collector.episode_end[:, 0])
    if env_id == "HalfCheetah-v5":
        assert list(ends) == [999, 1999] and not collector.terminated.any()
    else:
        assert len(ends) > 20 and collector.terminated.sum() == len(ends)
    np.testing.assert_allclose(
        collector.obs.reshape(T, -1), buf.observations.reshape(T, -1), atol=1e-5
    )
    np.testing.assert_allclose(batch.values.numpy(), buf.values.reshape(T), atol=1e-5)
    np.testing.assert_allclose(batch.advantages.numpy(), buf.advantages.reshape(T), atol=1e-4)
    np.testing.assert_allclose(batch.returns.numpy(), buf.returns.reshape(T), atol=1e-4)
