"""GAE, advantage normalization and the running normalizer against stable-baselines3's own
code on the same random data."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.running_mean_std import RunningMeanStd as SB3RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize

from rl_trust.envs.normalize import Normalizer, RunningMeanStd
from rl_trust.rollout import gae, normalize_per_minibatch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_sb3_rollout_buffer_with_terminations_and_truncations(seed):
    """SB3 bootstraps a truncated episode by adding γ·V(final observation) to the reward of
    its last step and then treating the step as done; ours keeps V(final observation) as
    the next value and stops the flow across the episode boundary. Same numbers."""
    rng = np.random.default_rng(seed)
    T, N, gamma, lam = 64, 3, 0.97, 0.9
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    last_values = rng.normal(size=N)  # V of the observation after the last step
    final_values = rng.normal(size=(T, N))  # V(final observation) where an episode ended
    terminated = rng.random((T, N)) < 0.05
    truncated = ~terminated & (rng.random((T, N)) < 0.05)
    terminated[-1, 0], truncated[-1, 1] = True, True  # both kinds on the last step too
    end = terminated | truncated
    assert terminated.sum() >= 3 and truncated.sum() >= 3

    next_values = np.concatenate([values[1:], last_values[None]])
    next_values = np.where(end, final_values, next_values)  # within the episode
    adv, ret = gae(
        rewards, values, next_values, terminated.astype(float), end.astype(float), gamma, lam
    )

    buf = RolloutBuffer(
        T, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), "cpu", lam, gamma, N
    )
    episode_start = np.ones(N, bool)
    for t in range(T):
        r = rewards[t] + gamma * final_values[t] * truncated[t]  # SB3's collect_rollouts
        buf.add(
            np.zeros((N, 1)),
            np.zeros(N),
            r,
            episode_start,
            torch.as_tensor(values[t]),
            torch.zeros(N),
        )
        episode_start = end[t]
    buf.compute_returns_and_advantage(torch.as_tensor(last_values), end[-1])
    np.testing.assert_allclose(adv, buf.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, buf.returns, rtol=1e-5, atol=1e-5)


def test_gae_with_lambda_one_and_no_ends_is_the_discounted_return_minus_value():
    rng = np.random.default_rng(5)
    T, gamma = 30, 0.9
    r, v = rng.normal(size=(T, 1)), rng.normal(size=(T, 1))
    last = rng.normal(size=1)
    zeros = np.zeros((T, 1))
    _, ret = gae(r, v, np.concatenate([v[1:], last[None]]), zeros, zeros, gamma, 1.0)
    expected = [
        sum(gamma**k * r[t + k, 0] for k in range(T - t)) + gamma ** (T - t) * last[0]
        for t in range(T)
    ]
    np.testing.assert_allclose(ret[:, 0], expected, rtol=1e-10)


def test_advantages_normalized_per_minibatch_as_sb3():
    adv = torch.randn(2048 + 37, generator=torch.Generator().manual_seed(0)) * 3 + 1
    out = normalize_per_minibatch(adv, 64)
    for start in range(0, len(adv), 64):
        mb = adv[start : start + 64]
        expected = (mb - mb.mean()) / (mb.std() + 1e-8)  # SB3's PPO.train
        torch.testing.assert_close(out[start : start + 64], expected)


def test_running_mean_std_matches_sb3():
    rng = np.random.default_rng(6)
    ours, theirs = RunningMeanStd((4,)), SB3RunningMeanStd(shape=(4,))
    for _ in range(200):
        batch = rng.normal(3.0, 2.0, size=(int(rng.integers(1, 9)), 4))
        ours.update(batch)
        theirs.update(batch)
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.var, theirs.var, rtol=1e-12)
    assert ours.count == pytest.approx(theirs.count)


class _Noise(gym.Env):
    """Random observations and rewards; episodes of random length."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def _obs(self):
        return self.np_random.normal(2.0, 5.0, 3).astype(np.float32)

    def step(self, action):
        r = float(self.np_random.normal(1.0, 3.0))
        return self._obs(), r, bool(self.np_random.random() < 0.05), False, {}


class _Record(VecEnvWrapper):
    """Keeps the raw stream that VecNormalize above it normalizes."""

    def reset(self):
        obs = self.venv.reset()
        self.raw = [("reset", obs.copy())]
        return obs

    def step_wait(self):
        obs, rew, done, info = self.venv.step_wait()
        self.raw.append((obs.copy(), rew.copy(), done.copy()))
        return obs, rew, done, info


def test_normalizer_matches_sb3_vecnormalize_on_the_same_stream():
    venv = DummyVecEnv([lambda: _Noise()] * 2)
    venv.seed(7)
    rec = _Record(venv)
    vn = VecNormalize(rec, gamma=0.95, clip_obs=10.0, clip_reward=10.0)
    ours = Normalizer((3,), 2, obs=True, reward=True, gamma=0.95, clip_obs=10.0, clip_reward=10.0)

    first = vn.reset()
    np.testing.assert_allclose(ours.obs(rec.raw[0][1]), first, rtol=1e-5)
    for _ in range(300):
        obs, rew, done, _ = vn.step(np.zeros(2, int))
        raw_obs, raw_rew, raw_done = rec.raw[-1]
        np.testing.assert_allclose(ours.reward(raw_rew, raw_done), rew, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.obs(raw_obs), obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.obs_rms.var, vn.obs_rms.var, rtol=1e-7)
    np.testing.assert_allclose(ours.ret_rms.var, vn.ret_rms.var, rtol=1e-7)
