"""Vector-env stepping into one preallocated batch, and generalized advantage estimation.

Each step stores what the update needs to know the rollout policy p = π_old exactly: the
observation, the action, log p(a|s), V(s), and p's distribution parameters. When an
episode ends by truncation (a time limit), the value of its final observation is kept, so
GAE bootstraps through the cut; when it ends by termination, nothing follows.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from rl_trust.envs import Normalizer, masks
from rl_trust.errors import UserError
from rl_trust.nets.actor_critic import ActorCritic
from rl_trust.nets.observations import ObsBatch, cat


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


ALL = slice(None)  # every env of the vector env


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
    # each state's invalid-action mask (booleans, True where allowed; None: unmasked): the
    # rollout policy's distribution was masked by it, and so is the new one's at update time
    masks: Tensor | None = None

    def __len__(self) -> int:
        return len(self.obs)

    def shuffled(self, generator: torch.Generator) -> Batch:
        """The batch in a random order: one gather per field, so minibatches are views; but
        the observations are gathered a minibatch at a time (Shuffled), so an epoch over
        pixels holds one minibatch's copy of them, not the whole batch's."""
        # drawn on the CPU (the generator's device, the same draws on any device), used on
        # the batch's
        perm = torch.randperm(len(self), generator=generator).to(self.actions.device)
        rest = (
            None if (x := getattr(self, f.name)) is None else x[perm]
            for f in dataclasses.fields(self)[1:]
        )
        return Batch(Shuffled(self.obs, perm), *rest)

    def to(self, device: torch.device | str) -> Batch:
        """The batch on `device`, every field (observations as stored: pixels stay uint8)."""
        return Batch(
            *(
                None if (x := getattr(self, f.name)) is None else x.to(device)
                for f in dataclasses.fields(self)
            )
        )

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
        none = itertools.repeat(None, -(-len(self) // size))  # (masks, when there are none)
        fields = [
            none if (x := getattr(self, f.name)) is None else x.split(size)
            for f in dataclasses.fields(self)
        ]
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
    Observations are stored on the CPU as the policy's layout stores them (nets/observations.py:
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
        action_masking: str = "off",
        env_name: str = "",
    ):
        self.env, self.policy, self.normalizer = env, policy, normalizer
        self.gamma, self.lam = gamma, lam
        self.n_envs = N = env.num_envs
        self.rng = np.random.Generator(np.random.PCG64(seed))
        T, fam = n_steps, policy.family
        obs, info = env.reset(seed=seed)
        # invalid-action masks (envs/masks.py), where the env provides them and the config
        # uses them: each step's stored, the current one's sampled under
        self.masks = masks.for_vector(env, info, action_masking, fam, env_name or repr(env))
        self.invalid_share: float | None = None  # of the last rollout (rollout/ tag)
        if self.masks is not None:
            self.mask_rows = np.zeros((T, N, fam.mask_size), bool)
            self.current_mask = self.masks.read(info)
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
        self._raw_rewards = np.zeros(N)
        self.steps_done = 0  # env steps collected (the learner's count), for messages
        self.current = policy.preprocess_numpy(obs, normalizer.obs)
        if hasattr(env, "halves") and not isinstance(self.current, np.ndarray):
            raise UserError("overlap=true takes Box observations (not Dict or Tuple)")

    @torch.no_grad()
    def collect(self) -> Batch:
        policy, fam, layout = self.policy, self.policy.family, self.layout
        T, N = self.actions.shape[:2]
        truncated_finals: list[tuple[int, int, np.ndarray]] = []
        start = time.perf_counter()
        if hasattr(self.env, "halves"):
            in_env = self._steps_overlapped(truncated_finals)
        else:
            in_env = self._steps(truncated_finals)

        # p = π_old on the whole batch, one torch pass
        device = policy.device
        flat_obs = layout.tensor(self.obs, device)
        flat_actions = torch.from_numpy(self.actions.reshape(T * N, -1)).to(device)
        dist_params, values = policy.evaluate(flat_obs)
        flat_masks = None
        if self.masks is not None:  # p is the masked distribution: what the actions came from
            flat_masks = torch.from_numpy(self.mask_rows.reshape(T * N, -1)).to(device)
            self.invalid_share = fam.invalid_share(dist_params, flat_masks).mean().item()
            dist_params = fam.masked(dist_params, flat_masks)
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
            self.rewards,
            values,
            next_values,
            self.terminated,
            self.episode_end,
            self.gamma,
            self.lam,
        )
        self.seconds["env"] += in_env
        self.seconds["policy"] += time.perf_counter() - start - in_env
        self.steps_done += T * N
        values, adv, ret = (torch.from_numpy(x.reshape(-1)).to(device) for x in (values, adv, ret))
        return Batch(
            obs=flat_obs,
            actions=flat_actions,
            log_probs=log_probs,
            values=values,
            dist_params=dist_params,
            advantages=adv,
            returns=ret,
            masks=flat_masks,
        )

    def _steps(self, truncated_finals: list) -> float:
        """The rollout's T steps of every env at once; returns the seconds spent in the env."""
        sample, in_env = self.policy.sampler(self.rng), 0.0
        for t in range(len(self.actions)):
            self._act(t, ALL, sample)
            t_env = time.perf_counter()
            result = self.env.step(self.policy.family.to_env(self.actions[t]))
            in_env += time.perf_counter() - t_env
            self._observe(t, ALL, result, truncated_finals)
            self._normalize_rewards(t)
        return in_env

    def _steps_overlapped(self, truncated_finals: list) -> float:
        """Double-buffered sampling: the envs in two halves A and B, and while one half steps
        (in its own processes or threads) the policy acts on the other. Actions are drawn in
        the order _steps draws them (A's then B's, step by step), each from the current
        policy, so the batch is the one _steps would collect. Returns the seconds spent
        waiting for the envs."""
        (a, env_a), (b, env_b) = self.env.halves
        to_env, sample, in_env = self.policy.family.to_env, self.policy.sampler(self.rng), 0.0
        T = len(self.actions)
        self._act(0, a, sample)
        env_a.step_async(to_env(self.actions[0, a]))
        for t in range(T):
            self._act(t, b, sample)  # (while A steps)
            env_b.step_async(to_env(self.actions[t, b]))
            t_env = time.perf_counter()
            result = env_a.step_wait()
            in_env += time.perf_counter() - t_env
            self._observe(t, a, result, truncated_finals)
            if t + 1 < T:  # (while B steps)
                self._act(t + 1, a, sample)
                env_a.step_async(to_env(self.actions[t + 1, a]))
            t_env = time.perf_counter()
            result = env_b.step_wait()
            in_env += time.perf_counter() - t_env
            self._observe(t, b, result, truncated_finals)
            self._normalize_rewards(t)
        return in_env

    def _act(self, t: int, envs: slice, sample) -> None:
        """Actions of step t for `envs` from their current observations, both stored."""
        if envs == ALL:
            x = self.current
            self.layout.write(self.obs, t, x)
        else:  # (overlap: Box observations, one array)
            x = self.current[envs]
            self.obs[t, envs] = x
        if self.masks is None:
            self.actions[t, envs] = sample(x)
        else:  # (its mask stored: the update compares both policies under it)
            mask = self.current_mask[envs]
            self.mask_rows[t, envs] = mask
            self.actions[t, envs] = sample(x, mask)

    def _observe(self, t: int, envs: slice, result: tuple, truncated_finals: list) -> None:
        """Step t's outcome for `envs`: episode statistics, raw rewards, ends, and the next
        observations; the final observation of an episode cut by a time limit, for its
        bootstrap, normalized by this step's statistics (as SB3's VecNormalize does)."""
        obs, reward, term, trunc, info = result
        end = term | trunc
        self._track_episodes(reward, end, envs)
        self._raw_rewards[envs] = reward
        self.terminated[t, envs], self.episode_end[t, envs] = term, end
        x = self.policy.preprocess_numpy(obs, self.normalizer.obs)
        if envs == ALL:
            self.current = x
        else:
            self.current[envs] = x
        if self.masks is not None:  # the masks of the states the envs are in now
            self.masks.step = self.steps_done + (t + 1) * self.n_envs
            self.current_mask[envs] = self.masks.read(info, envs)
        first = envs.start or 0
        for i in np.flatnonzero(trunc):
            frozen = partial(self.normalizer.obs, update=False)
            final = self.layout.one(info["final_obs"][i])
            truncated_finals.append((t, first + i, self.policy.preprocess_numpy(final, frozen)))

    def _normalize_rewards(self, t: int) -> None:
        """Step t's rewards as stored, once every env's are in (the return statistics
        see all envs at once, as in SB3's VecNormalize)."""
        self.rewards[t] = self.normalizer.reward(self._raw_rewards, self.episode_end[t] > 0)

    def _track_episodes(self, reward: np.ndarray, end: np.ndarray, envs: slice) -> None:
        ep_return, ep_length = self._ep_return[envs], self._ep_length[envs]  # (views)
        ep_return += reward
        ep_length += 1
        if end.any():
            for i in np.flatnonzero(end):
                self.episode_returns.append(float(ep_return[i]))
                self.episode_lengths.append(int(ep_length[i]))
                self.episodes += 1
            ep_return[end] = 0.0
            ep_length[end] = 0
