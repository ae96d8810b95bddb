"""Vector-env stepping into one preallocated batch, and generalized advantage estimation.

Each step stores what the update needs to know the rollout policy p = π_old exactly: the
observation, the action, log p(a|s), V(s), and p's distribution parameters. When an
episode ends by truncation (a time limit), the value of its final observation is kept, so
GAE bootstraps through the cut; when it ends by termination, nothing follows.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from rl_trust.envs import Normalizer
from rl_trust.observations import ObsBatch, cat
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

    obs: Tensor | ObsBatch | Shuffled  # as the rollout stores them (pixels uint8)
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    dist_params: Tensor  # the rollout policy p's distribution, per state
    advantages: Tensor
    returns: Tensor

    def __len__(self) -> int:
        return len(self.obs)

    def shuffled(self, generator: torch.Generator) -> Batch:
        """The batch in a random order: one gather per field, so minibatches are views; but
        the observations are gathered a minibatch at a time (Shuffled), so an epoch over
        pixels holds one minibatch's copy of them, not the whole batch's."""
        # drawn on the CPU (the generator's device, the same draws on any device), used on
        # the batch's
        perm = torch.randperm(len(self), generator=generator).to(self.actions.device)
        rest = (getattr(self, f.name)[perm] for f in dataclasses.fields(self)[1:])
        return Batch(Shuffled(self.obs, perm), *rest)

    def to(self, device: torch.device | str) -> Batch:
        """The batch on `device`, every field (observations as stored: pixels stay uint8)."""
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    def without_obs(self) -> Batch:
        """The batch less its observations (what the objective's terms need)."""
        return dataclasses.replace(self, obs=None)

    @staticmethod
    def cat(batches) -> Batch:
        fields = [f.name for f in dataclasses.fields(Batch)]
        parts = ([getattr(b, f) for b in batches] for f in fields)
        return Batch(*(None if xs[0] is None else cat(xs) for xs in parts))

    def minibatches(self, size: int) -> Iterator[Batch]:
        """Consecutive slices of `size` (the last may be shorter), as stable-baselines3's,
        made one at a time."""
        fields = [getattr(self, f.name).split(size) for f in dataclasses.fields(self)]
        return (Batch(*parts) for parts in zip(*fields, strict=True))


@dataclass
class Shuffled:
    """Observations in the order `perm`, gathered when split: a minibatch at a time."""

    obs: Tensor | ObsBatch
    perm: Tensor

    def __len__(self) -> int:
        return len(self.perm)

    def split(self, size: int) -> Iterator[Tensor | ObsBatch]:
        return (self.obs[index] for index in self.perm.split(size))


def normalize_per_minibatch(adv: Tensor, size: int) -> Tensor:
    """(Â − mean) / (std + 1e-8) within each consecutive minibatch of `size`, as SB3 does
    per minibatch, in one vectorized pass; a last minibatch of one sample is left as is."""
    full = len(adv) - len(adv) % size
    head = adv[:full].view(-1, size)
    parts = [((head - head.mean(1, keepdim=True)) / (head.std(1, keepdim=True) + 1e-8)).view(-1)]
    tail = adv[full:]
    if len(tail) > 1:
        tail = (tail - tail.mean()) / (tail.std() + 1e-8)
    return torch.cat([*parts, tail])


class Collector:
    """Steps a vector env with a policy; owns the env's current observation and the
    episode statistics (on raw, unnormalized rewards), and refills one preallocated batch.

    Per step, actions are sampled from the policy's `sampler` (the manual engine's evaluates
    the MLP in numpy, a few microseconds where a torch call costs tens). After the last step,
    one batched torch pass computes what the update needs of p = π_old: its distribution
    parameters, log p(a|s) and V(s), exactly as the update's own forward pass computes them.
    Observations are stored on the CPU as the policy's layout stores them (observations.py:
    pixels as uint8, scaled only inside the network); the batch is handed over on the
    policy's device.
    """

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
        self.n_envs = N = env.num_envs
        self.rng = np.random.Generator(np.random.PCG64(seed))
        T, fam = n_steps, policy.family
        self.layout = policy.obs_layout
        self.obs = self.layout.empty((T, N))
        self.actions = np.zeros((T, N, fam.action_dim), np.float32)
        self.rewards = np.zeros((T, N), np.float32)
        self.terminated = np.zeros((T, N), np.float32)
        self.episode_end = np.zeros((T, N), np.float32)
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.episodes = 0
        self.seconds = {"env": 0.0, "policy": 0.0}  # where the rollout's time went
        self._ep_return = np.zeros(N)
        self._ep_length = np.zeros(N, np.int64)
        obs, _ = env.reset(seed=seed)
        self.current = policy.preprocess_numpy(obs, normalizer.obs)

    @torch.no_grad()
    def collect(self) -> Batch:
        policy, fam, rng, layout = self.policy, self.policy.family, self.rng, self.layout
        sample = policy.sampler(rng)
        T, N = self.actions.shape[:2]
        truncated_finals: list[tuple[int, int, np.ndarray]] = []
        frozen = partial(self.normalizer.obs, update=False)
        start, in_env = time.perf_counter(), 0.0
        for t in range(T):
            x = self.current
            action = sample(x)
            layout.write(self.obs, t, x)
            self.actions[t] = action
            t_env = time.perf_counter()
            obs, reward, term, trunc, info = self.env.step(fam.to_env(action))
            in_env += time.perf_counter() - t_env
            end = term | trunc
            self._track_episodes(reward, end)
            self.rewards[t] = self.normalizer.reward(reward, end)
            self.terminated[t], self.episode_end[t] = term, end
            self.current = policy.preprocess_numpy(obs, self.normalizer.obs)
            for i in np.flatnonzero(trunc):  # bootstrap through the time limit: the final
                # observation normalized by this step's statistics, as SB3's VecNormalize does
                final = layout.one(info["final_obs"][i])
                truncated_finals.append((t, i, policy.preprocess_numpy(final, frozen)))

        # p = π_old on the whole batch, one torch pass
        device = policy.device
        flat_obs = layout.tensor(self.obs, device)
        flat_actions = torch.from_numpy(self.actions.reshape(T * N, -1)).to(device)
        dist_params, values = policy.evaluate(flat_obs)
        log_probs = fam.log_prob(dist_params, flat_actions)
        values = values.cpu().numpy().reshape(T, N)
        next_values = np.empty_like(values)  # V(s_{t+1}) within the episode
        next_values[:-1] = values[1:]
        next_values[-1] = policy.value(layout.tensor(self.current)).cpu().numpy()
        if truncated_finals:
            finals = layout.concat([o for _, _, o in truncated_finals])
            v = policy.value(layout.tensor(finals)).cpu().numpy()
            for (t, i, _), value in zip(truncated_finals, v, strict=True):
                next_values[t, i] = value

        adv, ret = gae(
            self.rewards, values, next_values, self.terminated, self.episode_end,
            self.gamma, self.lam,
        )  # fmt: skip
        self.seconds["env"] += in_env
        self.seconds["policy"] += time.perf_counter() - start - in_env
        values, adv, ret = (torch.from_numpy(x.reshape(-1)).to(device) for x in (values, adv, ret))
        return Batch(
            obs=flat_obs, actions=flat_actions, log_probs=log_probs, values=values,
            dist_params=dist_params, advantages=adv, returns=ret,
        )  # fmt: skip

    def _track_episodes(self, reward: np.ndarray, end: np.ndarray) -> None:
        self._ep_return += reward
        self._ep_length += 1
        if end.any():
            for i in np.flatnonzero(end):
                self.episode_returns.append(float(self._ep_return[i]))
                self.episode_lengths.append(int(self._ep_length[i]))
                self.episodes += 1
            self._ep_return[end] = 0.0
            self._ep_length[end] = 0
