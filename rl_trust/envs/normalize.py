"""Observation and reward normalization, as stable-baselines3's VecNormalize computes it.

Observations: running mean and variance of every observation seen, then
clip((o − μ) / √(σ² + ε)). Rewards: divided by the running standard deviation of the
discounted return (not of the reward), then clipped. The statistics are state, saved with
every checkpoint and frozen for evaluation.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        # the same arithmetic as mean/var of the batch, in fewer numpy calls (once per env step)
        n = batch.shape[0]
        b_mean = batch.sum(0, dtype=np.float64) / n
        b_m2 = np.square(batch - b_mean).sum(0)  # n · var of the batch
        delta, total = b_mean - self.mean, self.count + n
        m2 = self.var * self.count + b_m2 + np.square(delta) * (self.count * n / total)
        self.mean, self.var, self.count = self.mean + delta * (n / total), m2 / total, total


class Normalizer:
    def __init__(
        self,
        obs_shape,
        n_envs,
        *,
        obs: bool,
        reward: bool,
        gamma: float,
        clip_obs: float,
        clip_reward: float,
    ):
        self.norm_obs, self.norm_reward = obs, reward
        self.gamma, self.clip_obs, self.clip_reward = gamma, clip_obs, clip_reward
        self.obs_rms = RunningMeanStd(obs_shape)
        self.ret_rms = RunningMeanStd(())
        self.returns = np.zeros(n_envs, np.float64)
        self.training = True

    def obs(self, o: np.ndarray, update: bool = True) -> np.ndarray:
        if not self.norm_obs:
            return o
        if update and self.training:
            self.obs_rms.update(o)
        z = (o - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + EPS)
        return np.minimum(np.maximum(z, -self.clip_obs), self.clip_obs).astype(np.float32)

    def reward(self, r: np.ndarray, done: np.ndarray) -> np.ndarray:
        if not self.norm_reward:
            return r
        if self.training:
            self.returns = self.returns * self.gamma + r
            self.ret_rms.update(self.returns)
            self.returns[done] = 0.0
        z = r / np.sqrt(self.ret_rms.var + EPS)
        return np.minimum(np.maximum(z, -self.clip_reward), self.clip_reward)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "obs_mean": self.obs_rms.mean,
            "obs_var": self.obs_rms.var,
            "obs_count": np.array(self.obs_rms.count),
            "ret_mean": np.array(self.ret_rms.mean),
            "ret_var": np.array(self.ret_rms.var),
            "ret_count": np.array(self.ret_rms.count),
            "returns": self.returns,
        }

    def load_state_dict(self, s: dict[str, np.ndarray]) -> None:
        for key, now in self.state_dict().items():
            if np.shape(s[key]) != np.shape(now):
                raise ValueError(
                    f"normalizer {key} has shape {np.shape(s[key])}, not {np.shape(now)}"
                )
        self.obs_rms.mean, self.obs_rms.var = np.array(s["obs_mean"]), np.array(s["obs_var"])
        self.obs_rms.count = float(s["obs_count"])
        self.ret_rms.mean, self.ret_rms.var = np.array(s["ret_mean"]), np.array(s["ret_var"])
        self.ret_rms.count = float(s["ret_count"])
        self.returns = np.array(s["returns"])
