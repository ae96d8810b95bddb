"""Vector-env stepping into one preallocated batch, and generalized advantage estimation.

Each step stores what the update needs to know the rollout policy p = π_old exactly: the
observation, the action, log p(a|s), V(s), and p's distribution parameters. When an
episode ends by truncation (a time limit), the value of its final observation is kept, so
GAE bootstraps through the cut; when it ends by termination, nothing follows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rl_trust.envs import Normalizer
from rl_trust.policies import ActorCritic


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    episode_end: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns, arrays of shape (T, n_envs).

    next_values[t] is V(s_{t+1}) of the state that followed s_t in its own episode (the final
    observation when the episode ended at t); terminated[t] zeroes it, episode_end[t]
    (terminated or truncated) stops the advantage from flowing back across episodes:

        δ_t = r_t + γ (1 − term_t) V(s_{t+1}) − V(s_t)
        Â_t = δ_t + γλ (1 − end_t) Â_{t+1}
    """
    T = rewards.shape[0]
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    carry = gamma * lam * (1.0 - episode_end)
    adv = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for t in reversed(range(T)):
        running = deltas[t] + carry[t] * running
        adv[t] = running
    return adv, adv + values


@dataclass
class Batch:
    """One rollout, flattened to (T·n_envs, ...) views."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    dist_params: Tensor  # the rollout policy p's distribution, per state
    advantages: Tensor
    returns: Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]


class Collector:
    """Steps a vector env with a policy; owns the env's current observation and the
    episode statistics (on raw, unnormalized rewards), and refills one preallocated batch."""

    def __init__(
        self,
        env,
        policy: ActorCritic,
        normalizer: Normalizer,
        n_steps: int,
        gamma: float,
        lam: float,
        seed: int,
    ):
        self.env, self.policy, self.normalizer = env, policy, normalizer
        self.gamma, self.lam = gamma, lam
        self.n_envs = env.num_envs
        self.generator = torch.Generator().manual_seed(seed)
        fam = policy.family
        T, N = n_steps, self.n_envs
        self.obs = torch.zeros(T, N, policy.n_obs)
        self.actions = torch.zeros(T, N, fam.action_dim)
        self.log_probs = torch.zeros(T, N)
        self.values = torch.zeros(T, N)
        self.dist_params = torch.zeros(T, N, fam.n_params)
        self.rewards = np.zeros((T, N), np.float32)
        self.next_values = np.zeros((T, N), np.float32)
        self.terminated = np.zeros((T, N), np.float32)
        self.episode_end = np.zeros((T, N), np.float32)
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.episodes = 0
        self._ep_return = np.zeros(N)
        self._ep_length = np.zeros(N, np.int64)
        obs, _ = env.reset(seed=seed)
        self.current = self._prep(normalizer.obs(obs))

    def _prep(self, obs: np.ndarray) -> Tensor:
        return self.policy.preprocess(torch.as_tensor(obs))

    @torch.no_grad()
    def _values_of(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.value(self._prep(self.normalizer.obs(obs, update=False))).numpy()

    @torch.no_grad()
    def collect(self) -> Batch:
        policy, fam = self.policy, self.policy.family
        T = self.obs.shape[0]
        for t in range(T):
            x = self.current
            params = policy.dist_params(x)
            action = fam.sample(params, self.generator)
            self.obs[t] = x
            self.actions[t] = action
            self.dist_params[t] = params
            self.log_probs[t] = fam.log_prob(params, action)
            self.values[t] = policy.value(x)

            obs, reward, term, trunc, info = self.env.step(fam.to_env(action.numpy()))
            end = term | trunc
            self._track_episodes(reward, end)
            if trunc.any():  # bootstrap through the time limit from the final observation
                rows = np.flatnonzero(trunc)
                final = np.stack([info["final_obs"][i] for i in rows])
                self.next_values[t, rows] = self._values_of(final)
            self.rewards[t] = self.normalizer.reward(reward, end)
            self.terminated[t], self.episode_end[t] = term, end
            self.current = self._prep(self.normalizer.obs(obs))
            if t > 0:  # the previous step's successor is this step's state, unless it ended
                prev_cont = self.episode_end[t - 1] == 0
                self.next_values[t - 1, prev_cont] = self.values[t].numpy()[prev_cont]
        last_cont = self.episode_end[T - 1] == 0
        self.next_values[T - 1, last_cont] = policy.value(self.current).numpy()[last_cont]

        adv, ret = gae(
            self.rewards,
            self.values.numpy(),
            self.next_values,
            self.terminated,
            self.episode_end,
            self.gamma,
            self.lam,
        )
        flat = lambda x: x.reshape(T * self.n_envs, *x.shape[2:])  # noqa: E731
        return Batch(
            obs=flat(self.obs),
            actions=flat(self.actions),
            log_probs=flat(self.log_probs),
            values=flat(self.values),
            dist_params=flat(self.dist_params),
            advantages=flat(torch.from_numpy(adv)),
            returns=flat(torch.from_numpy(ret)),
        )

    def _track_episodes(self, reward: np.ndarray, end: np.ndarray) -> None:
        self._ep_return += reward
        self._ep_length += 1
        for i in np.flatnonzero(end):
            self.episode_returns.append(float(self._ep_return[i]))
            self.episode_lengths.append(int(self._ep_length[i]))
            self.episodes += 1
        self._ep_return[end] = 0.0
        self._ep_length[end] = 0
