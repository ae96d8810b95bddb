"""Image, Dict and Tuple observations: which class each space gets, how the rollout stores
it (pixels uint8, normalization on vector parts only), what the network receives, the
Nature CNN against stable-baselines3's, and which engine and encoder the config picks."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_trust import agents
from rl_trust.config import PPOConfig, TRPOConfig
from rl_trust.errors import UserError
from rl_trust.nets import build as networks
from rl_trust.nets.encoders import Combined, EncoderMlp, NatureCNN
from rl_trust.nets.manual import MlpActorCritic
from rl_trust.nets.observations import (
    DictObs,
    DiscreteObs,
    ImageObs,
    ObsBatch,
    TupleObs,
    VectorObs,
    layout_for,
)
from rl_trust.rollout import Batch

Box = gym.spaces.Box
IMAGE_HWC = Box(0, 255, (40, 44, 3), np.uint8)
IMAGE_CHW = Box(0, 255, (4, 84, 84), np.uint8)
DICT = gym.spaces.Dict(
    {
        "pixels": IMAGE_HWC,
        "pos": Box(-5.0, 5.0, (3,), np.float32),
        "grid": Box(-1.0, 1.0, (2, 2), np.float32),
        "mode": gym.spaces.Discrete(3, start=1),
    }
)


def test_each_space_gets_its_class():
    assert isinstance(layout_for(IMAGE_HWC), ImageObs)
    assert layout_for(IMAGE_HWC).channels_last
    assert not layout_for(IMAGE_CHW).channels_last
    assert layout_for(IMAGE_HWC).input_shape() == (3, 40, 44)
    assert layout_for(IMAGE_CHW).input_shape() == (4, 84, 84)
    # SB3's rule: uint8, 3-D, bounds 0..255; anything else is a vector
    for not_image in (
        Box(0, 255, (40, 44, 3), np.float32),
        Box(0, 255, (84, 84), np.uint8),
        Box(0, 1, (40, 44, 3), np.uint8),
    ):
        assert isinstance(layout_for(not_image), VectorObs)
    assert isinstance(layout_for(gym.spaces.Discrete(4)), DiscreteObs)
    assert isinstance(layout_for(DICT), DictObs)
    assert isinstance(layout_for(gym.spaces.Tuple((IMAGE_HWC, gym.spaces.Discrete(2)))), TupleObs)
    for bad in (
        gym.spaces.Dict({"a": gym.spaces.Dict({"b": Box(0, 1, (1,))})}),
        gym.spaces.Text(5),
    ):
        with pytest.raises(UserError, match="not supported"):
            layout_for(bad)


def test_pixels_stay_uint8_and_reach_the_network_in_unit_range():
    layout = layout_for(IMAGE_HWC)
    raw = np.zeros((2, 40, 44, 3), np.uint8)
    raw[1, 7, 9, 2] = 255
    raw[0, 1, 2, 0] = 51
    stored = layout.store(raw, normalize=lambda x: pytest.fail("pixels were normalized"))
    assert stored.dtype == np.uint8 and stored.shape == raw.shape
    x = layout.to_input(layout.tensor(stored), torch.float32, torch.device("cpu"))
    assert x.shape == (2, 3, 40, 44) and x.dtype == torch.float32
    assert x[1, 2, 7, 9] == 1.0 and x[0, 0, 1, 2] == pytest.approx(0.2)
    assert float(x.sum()) == pytest.approx(1.2)


def test_dict_normalizes_only_its_vector_parts():
    layout = layout_for(DICT)
    assert layout.norm_shape == (3 + 4,)  # pos and grid, flattened, in the space's key order
    n = 5
    rng = np.random.default_rng(0)
    raw = {
        "pixels": rng.integers(0, 256, (n, 40, 44, 3), dtype=np.uint8),
        "pos": rng.normal(size=(n, 3)).astype(np.float32),
        "grid": rng.normal(size=(n, 2, 2)).astype(np.float32),
        "mode": np.array([1, 2, 3, 1, 3]),
    }
    seen = []

    def normalize(v):
        seen.append(v.shape)
        return v + 100

    stored = layout.store(raw, normalize)
    assert seen == [(n, 7)]
    np.testing.assert_array_equal(stored["pixels"], raw["pixels"])
    assert stored["pixels"].dtype == np.uint8
    np.testing.assert_allclose(stored["pos"], raw["pos"] + 100)
    np.testing.assert_allclose(stored["grid"], raw["grid"] + 100)
    assert stored["grid"].shape == (n, 2, 2)
    np.testing.assert_array_equal(stored["mode"], np.eye(3)[raw["mode"] - 1])  # start=1

    x = layout.to_input(layout.tensor(stored), torch.float64, torch.device("cpu"))
    assert isinstance(x, dict) and list(x) == list(DICT.spaces)
    assert x["pixels"].shape == (n, 3, 40, 44) and float(x["pixels"].max()) <= 1.0
    assert x["pos"].dtype == torch.float64


def test_an_image_only_space_has_nothing_to_normalize():
    assert layout_for(IMAGE_CHW).norm_shape == (0,)
    assert layout_for(Box(-1, 1, (3, 2))).norm_shape == (3, 2)


def test_obs_batch_moves_with_the_other_fields():
    """Shuffling, minibatches and concatenation keep a Dict batch's rows with their actions."""
    layout = layout_for(gym.spaces.Dict({"a": Box(0, 10, (2,)), "b": IMAGE_CHW}))
    buf = layout.empty((3, 4))
    for t in range(3):
        layout.write(
            buf, t, {"a": np.full((4, 2), t, np.float32), "b": np.full((4, 4, 84, 84), t, np.uint8)}
        )
    obs = layout.tensor(buf)
    assert isinstance(obs, ObsBatch) and len(obs) == 12 and obs.parts["b"].dtype == torch.uint8
    row = torch.arange(12.0)
    batch = Batch(obs, row[:, None], row, row, row[:, None], row, row)
    shuffled = batch.shuffled(torch.Generator().manual_seed(0))
    back = Batch.cat(list(shuffled.minibatches(5)))
    assert sorted(back.log_probs.tolist()) == row.tolist()  # every row once
    assert not torch.equal(back.log_probs, row)  # in a shuffled order
    # row i of the buffer came from step i // 4
    assert torch.equal(back.obs.parts["a"][:, 0], back.log_probs // 4)
    assert torch.equal(back.obs.parts["b"][:, 0, 0, 0].float(), back.log_probs // 4)


def test_an_epoch_gathers_pixels_a_minibatch_at_a_time():
    """Shuffled minibatches of stored pixels: the rows of one gather of the whole batch, each
    minibatch its own gather (no full-batch copy of the pixels per epoch)."""
    obs = torch.randint(0, 256, (10, 4, 36, 36), dtype=torch.uint8)
    row = torch.arange(10.0)
    batch = Batch(obs, row[:, None], row, row, row[:, None], row, row)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    minibatches = batch.shuffled(torch.Generator().manual_seed(3)).minibatches(4)
    assert not isinstance(minibatches, list)  # made one at a time
    parts = list(minibatches)
    assert [len(mb) for mb in parts] == [4, 4, 2]
    assert torch.equal(torch.cat([mb.obs for mb in parts]), obs[perm])
    assert torch.equal(torch.cat([mb.log_probs for mb in parts]), row[perm])


def test_nature_cnn_is_stable_baselines3s():
    """Same layers and shapes as SB3's NatureCNN; with SB3's weights, the same features
    (SB3 scales by 255 in preprocess_obs; here the observation class does)."""
    from stable_baselines3.common.torch_layers import NatureCNN as SB3NatureCNN

    for space in (IMAGE_CHW, Box(0, 255, (96, 96, 3), np.uint8)):
        layout = layout_for(space)
        ours = NatureCNN(layout)
        c, h, w = layout.input_shape()
        theirs = SB3NatureCNN(Box(0, 255, (c, h, w), np.uint8), features_dim=512)
        shapes = [tuple(p.shape) for p in theirs.state_dict().values()]
        assert [tuple(p.shape) for p in ours.state_dict().values()] == shapes
        ours.load_state_dict(theirs.state_dict())
        raw = np.random.default_rng(0).integers(0, 256, (2, *space.shape), dtype=np.uint8)
        x = layout.to_input(torch.from_numpy(raw), torch.float32, torch.device("cpu"))
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))
        # where a gradient flows, ours computes in channels-last: same features and gradients
        out_ours, out_theirs = ours(x), theirs(x)
        torch.testing.assert_close(out_ours, out_theirs)
        g = torch.randn_like(out_ours)
        out_ours.backward(g)
        out_theirs.backward(g)
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_too_small_an_image_is_one_line():
    with pytest.raises(UserError, match=r"20×36 are too small.*at least 36×36"):
        NatureCNN(layout_for(Box(0, 255, (20, 36, 3), np.uint8)))


def test_engine_and_encoder_follow_the_space():
    """engine=auto: manual for vectors, autograd with the encoders for images and Dicts;
    PPO shares one encoder (SB3's CnnPolicy), TRPO gets one per latent; engine=manual on
    pixels is one line."""
    action = gym.spaces.Discrete(3)
    mlp = agents.build(PPOConfig(), Box(-1, 1, (4,)), action, 0).policy
    assert isinstance(mlp, MlpActorCritic)
    ppo = agents.build(PPOConfig(), IMAGE_CHW, action, 0).policy
    assert ppo.engine == "autograd" and isinstance(ppo.extractor, EncoderMlp)
    assert ppo.extractor.encoder_vf is None and ppo.shared
    trpo = agents.build(TRPOConfig(), IMAGE_CHW, action, 0).policy
    assert trpo.extractor.encoder_vf is not None and not trpo.shared
    multi = agents.build(PPOConfig(net_arch=(32,)), DICT, action, 0).policy
    combined = multi.extractor.encoder_pi
    assert isinstance(combined, Combined)
    assert combined.features_dim == 256 + 3 + 4 + 3  # SB3's CombinedExtractor: CNN of 256
    with pytest.raises(UserError, match="engine=manual trains the built-in MLP on vector"):
        agents.build(PPOConfig(engine="manual"), DICT, action, 0)


@pytest.mark.parametrize("space", [IMAGE_HWC, DICT], ids=["image", "dict"])
def test_the_policy_takes_stored_batches(space):
    policy = networks.make_policy(PPOConfig(), space, gym.spaces.Discrete(2))
    layout = policy.obs_layout
    raw = layout.one(space.sample())
    x = layout.tensor(policy.preprocess_numpy(raw))
    params, values = policy(x)
    assert params.shape == (1, 2) and values.shape == (1,)
    sample = policy.sampler(np.random.default_rng(0))
    assert sample(policy.preprocess_numpy(raw)).shape == (1, 1)


def test_a_factory_receives_preprocessed_observations(tmp_path, monkeypatch):
    """The contract in docs/networks.md: images in [0, 1] channels first, Discrete one-hot,
    a Dict as a dict of tensors; what the module saw is recorded by the module itself."""
    (tmp_path / "recorder.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        SEEN = []

        class Recorder(nn.Module):
            latent_dim_pi = latent_dim_vf = 8

            def __init__(self):
                super().__init__()
                self.body = nn.LazyLinear(8)

            def forward(self, obs):
                SEEN.append({k: (tuple(v.shape), v.dtype, float(v.min()), float(v.max()))
                             for k, v in obs.items()})
                flat = torch.cat([v.flatten(1) for v in obs.values()], dim=1)
                return self.body(flat), self.body(flat)

        def factory(observation_space, action_space):
            return Recorder()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = dataclasses.replace(PPOConfig(), policy="recorder:factory")
        policy = networks.make_policy(cfg, DICT, gym.spaces.Discrete(2))
        recorder = sys.modules["recorder"]
        recorder.SEEN.clear()
        raw = {
            "pixels": np.full((1, 40, 44, 3), 255, np.uint8),
            "pos": np.ones((1, 3)),
            "grid": np.zeros((1, 2, 2)),
            "mode": np.array([2]),
        }
        policy(policy.obs_layout.tensor(policy.preprocess_numpy(raw)))
        seen = recorder.SEEN[-1]
        assert seen["pixels"] == ((1, 3, 40, 44), torch.float32, 1.0, 1.0)
        assert seen["mode"] == ((1, 3), torch.float32, 0.0, 1.0)
        assert seen["pos"] == ((1, 3), torch.float32, 1.0, 1.0)
    finally:
        sys.modules.pop("recorder", None)


@pytest.mark.parametrize("space", [IMAGE_CHW, DICT, Box(-1.0, 1.0, (5,), np.float32)])
def test_a_pass_over_a_whole_batch_in_slices_equals_one_pass(space):
    """evaluate (the rollout's and the KL statistics' pass, 256 states at a time for pixels
    and Dicts, vectors in one) gives forward's outputs on the whole batch, in float64."""
    cfg = PPOConfig(engine="autograd")
    policy = networks.make_policy(cfg, space, gym.spaces.Discrete(3)).double()
    layout = policy.obs_layout
    space.seed(0)
    raw = [space.sample() for _ in range(600)]
    stored = layout.store(_stack(space, raw))
    obs = layout.tensor(stored)
    with torch.no_grad():
        whole = policy(obs)
    sliced = policy.evaluate(obs)
    for a, b in zip(sliced, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _stack(space, samples):
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([s[k] for s in samples]) for k in space.spaces}
    return np.stack(samples)


def test_bfloat16_precision_keeps_heads_and_distribution_in_float32():
    """precision=bfloat16 runs the encoder under autocast: outputs float32, close to the
    float32 network's with the same weights, gradients reach every parameter; the manual
    engine refuses it in one line."""
    from rl_trust import config

    torch.manual_seed(0)
    full = networks.make_policy(PPOConfig(), IMAGE_CHW, gym.spaces.Discrete(4))
    half = networks.make_policy(PPOConfig(precision="bfloat16"), IMAGE_CHW, gym.spaces.Discrete(4))
    half.load_state_dict(full.state_dict())
    raw = np.random.default_rng(0).integers(0, 256, (8, *IMAGE_CHW.shape), dtype=np.uint8)
    obs = half.obs_layout.tensor(raw)
    params, values, cache = half.forward_train(obs)
    assert params.dtype == values.dtype == torch.float32
    with torch.no_grad():
        ref_params, ref_values = full(obs)
    assert not torch.equal(params, ref_params)  # (computed in bfloat16: not bit-equal)
    torch.testing.assert_close(params, ref_params, rtol=0.05, atol=0.02)
    torch.testing.assert_close(values, ref_values, rtol=0.05, atol=0.02)
    half.backward(cache, torch.ones_like(params), torch.ones_like(values))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in half.parameters())
    assert all(p.dtype == torch.float32 for p in half.parameters())
    with pytest.raises(UserError, match="engine=manual computes in float32"):
        config.load("ppo", "CartPole-v1", {"engine": "manual", "precision": "bfloat16"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_the_update_freed_goes_back_to_the_os():
    """What the trainer calls after each update: glibc keeps freed heap blocks resident until
    malloc_trim hands them back (the creep of long image runs' peak RSS)."""
    from rl_trust import trainer

    assert trainer._trim is not None

    def rss() -> int:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # below the mmap threshold: heap
    keep = blocks[-1]  # a live block above them, so that the heap's top cannot shrink
    del blocks
    before = rss()
    trainer.release_freed_memory()
    assert before - rss() > 100 * 2**20
    del keep


def test_pixels_for_a_gradient_are_laid_out_channels_last_on_the_cpu():
    """The one float copy of a minibatch is made channels-last where a gradient will flow
    (what the CNN's backward wants), and stays as stored for the no-grad rollout."""
    for space in (IMAGE_CHW, IMAGE_HWC):
        layout = layout_for(space)
        x = layout.tensor(np.random.default_rng(0).integers(0, 256, (3, *space.shape), np.uint8))
        with torch.no_grad():
            plain = layout.to_input(x, torch.float32, torch.device("cpu"))
        with torch.enable_grad():
            for_grad = layout.to_input(x, torch.float32, torch.device("cpu"))
        assert for_grad.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(plain, for_grad) and plain.shape == for_grad.shape
        assert plain.is_contiguous() == (space is IMAGE_CHW)  # (HWC: a permuted view's copy)
