"""Our lean SyncVectorEnv steps exactly as gymnasium's SyncVectorEnv (SAME_STEP autoreset)."""

import gymnasium as gym
import numpy as np
import pytest

from rl_trust.config import EnvConfig
from rl_trust.envs import make_vec


@pytest.mark.parametrize(
    "env_id,steps", [("CartPole-v1", 400), ("Pendulum-v1", 450), ("MountainCarContinuous-v0", 1100)]
)
def test_sync_vector_env_matches_gymnasium(env_id, steps):
    """Same seeds, same actions: identical observations, rewards, terminations, truncations
    (time limits included) and final observations of the ended episodes."""
    ours = make_vec(EnvConfig(env_id=env_id, n_envs=3), 0)
    theirs = gym.make_vec(
        env_id,
        3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    assert type(ours).__module__ == "rl_trust.envs.sync"
    assert ours.single_action_space == theirs.single_action_space
    o1, _ = ours.reset(seed=5)
    o2, _ = theirs.reset(seed=5)
    np.testing.assert_array_equal(o1, o2)
    theirs.action_space.seed(1)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(steps):
        a = theirs.action_space.sample()
        r1, r2 = ours.step(a), theirs.step(a)
        for x, y in zip(r1[:4], r2[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        ends["terminated"] += int(r1[2].sum())
        ends["truncated"] += int(r1[3].sum())
        for i in np.flatnonzero(r1[2] | r1[3]):
            np.testing.assert_array_equal(r1[4]["final_obs"][i], r2[4]["final_obs"][i])
        assert ("final_obs" in r1[4]) == bool((r1[2] | r1[3]).any())
    assert sum(ends.values()) > 0
    if env_id == "Pendulum-v1":
        assert ends["truncated"] == 6  # 3 envs × 2 time limits of 200 steps
    ours.close()
    theirs.close()


def _same(x, y) -> None:
    """Equal observations, a Dict's or Tuple's part by part."""
    if isinstance(x, dict):
        assert list(x) == list(y)
        for k in x:
            _same(x[k], y[k])
    elif isinstance(x, tuple):
        assert len(x) == len(y)
        for a, b in zip(x, y, strict=True):
            _same(a, b)
    else:
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("env_id", ["Blackjack-v1", "rl_trust/DictCue-v0"])
def test_sync_vector_env_batches_dict_and_tuple_observations(env_id):
    """A Tuple (Blackjack) or Dict observation is batched per part, as gymnasium's own
    SyncVectorEnv batches it, final observations included."""
    ours = make_vec(EnvConfig(env_id=env_id, n_envs=3), 0)
    theirs = gym.make_vec(
        env_id,
        3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    _same(ours.reset(seed=5)[0], theirs.reset(seed=5)[0])
    theirs.action_space.seed(1)
    ended = 0
    for _ in range(60):
        a = theirs.action_space.sample()
        r1, r2 = ours.step(a), theirs.step(a)
        _same(r1[0], r2[0])
        for x, y in zip(r1[1:4], r2[1:4], strict=True):
            np.testing.assert_array_equal(x, y)
        for i in np.flatnonzero(r1[2] | r1[3]):
            _same(r1[4]["final_obs"][i], r2[4]["final_obs"][i])
            ended += 1
    assert ended > 0
    ours.close()
    theirs.close()
