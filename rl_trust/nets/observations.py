"""How each observation space is stored in the rollout and handed to the network.

One class per kind of space, as stable-baselines3's preprocess_obs treats them:

- `VectorObs`, a Box that is not an image: float32, normalized (normalize_obs) by the
  running statistics;
- `ImageObs`, SB3's image rule (a uint8 Box of 3 dimensions with bounds 0..255, channels
  first or last): kept as uint8 in the rollout, as the env gives it; the network sees
  float in [0, 1], channels first. Never normalized;
- `DiscreteObs`: one-hot float32;
- `DictObs` / `TupleObs`: one of the above per key / element, stored as one array per
  part; the network sees a dict / tuple of tensors. Normalization reaches their vector
  parts only, concatenated (flattened) into one vector for the statistics.

Numbers travel in three forms: *raw* (what a vector env returns: an array, or a dict /
tuple of arrays), *stored* (`store`: numpy, what the rollout keeps per step; a dict of
arrays for Dict and Tuple spaces) and *input* (`to_input`: torch, what the extractor's
forward receives). A stored batch of a Dict or Tuple space becomes an `ObsBatch` in torch.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rl_trust.errors import UserError

Normalize = Callable[[np.ndarray], np.ndarray]


def identity(x: np.ndarray) -> np.ndarray:
    return x


class ObsBatch:
    """A batch of Dict or Tuple observations: one tensor per part, batch first, indexed,
    split and concatenated together as one tensor is (what Batch does to its fields)."""

    def __init__(self, parts: dict):
        self.parts = parts

    def __getitem__(self, index) -> ObsBatch:
        return ObsBatch({k: v[index] for k, v in self.parts.items()})

    def __len__(self) -> int:
        return len(next(iter(self.parts.values())))

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def split(self, size: int) -> list[ObsBatch]:
        keys, pieces = list(self.parts), [v.split(size) for v in self.parts.values()]
        return [ObsBatch(dict(zip(keys, p, strict=True))) for p in zip(*pieces, strict=True)]

    def to(self, device) -> ObsBatch:
        return ObsBatch({k: v.to(device) for k, v in self.parts.items()})

    @staticmethod
    def cat(batches: list[ObsBatch]) -> ObsBatch:
        return ObsBatch({k: torch.cat([b.parts[k] for b in batches]) for k in batches[0].parts})


def cat(tensors: list) -> Tensor | ObsBatch:
    """torch.cat, for observation batches too."""
    return ObsBatch.cat(tensors) if isinstance(tensors[0], ObsBatch) else torch.cat(tensors)


class Observation:
    """One observation space in its three forms (above); a subclass per kind of space."""

    is_vector = True  # what the built-in MLP (and so the manual engine) takes as it is
    normalized = False  # whether observation normalization applies to it

    def __init__(self, space: gym.Space, shape: tuple[int, ...], dtype: type = np.float32):
        self.space, self.shape, self.dtype = space, shape, dtype

    @property
    def norm_shape(self) -> tuple[int, ...]:
        """The shape of the statistics the normalizer keeps: of what it normalizes."""
        return (0,)

    def store(self, raw, normalize: Normalize = identity) -> np.ndarray:
        """A batch of raw observations as the rollout stores it."""
        raise NotImplementedError

    def to_input(self, x: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A stored batch (torch) as the network takes it."""
        return x.to(device, dtype)

    def input_shape(self) -> tuple[int, ...]:
        return self.shape

    def probe(self, n: int, dtype: torch.dtype):
        """A batch of n zero observations, as the network takes them."""
        return torch.zeros((n, *self.input_shape()), dtype=dtype)

    # the stored form, batched: arrays here, dicts of arrays for Dict and Tuple spaces

    def empty(self, lead: tuple[int, ...]) -> np.ndarray:
        return np.zeros((*lead, *self.shape), self.dtype)

    def write(self, buffer: np.ndarray, t: int, x: np.ndarray) -> None:
        buffer[t] = x

    def concat(self, xs: list) -> np.ndarray:
        return np.concatenate(xs)

    def tensor(self, x: np.ndarray, device: torch.device | None = None) -> Tensor:
        """A stored batch, its leading dimensions merged into one, as a tensor."""
        return torch.from_numpy(x.reshape(-1, *self.shape)).to(device)

    def one(self, raw) -> np.ndarray:
        """One raw observation as a raw batch of one."""
        return np.asarray(raw)[None]

    def batch_of(self, raw) -> tuple[object, bool]:
        """One raw observation or a batch of them (as `predict` takes), as a raw batch,
        and whether it was one; a ValueError for another shape."""
        shape = self.space.shape or ()
        x = np.asarray(raw)
        if x.shape == shape:
            return x[None], True
        if x.shape[1:] != shape:
            raise ValueError(f"observation of shape {x.shape}: expected {shape} or a batch of them")
        return x, False


class VectorObs(Observation):
    """A Box that is not an image: float32, normalized; flat for the built-in MLP."""

    normalized = True

    def __init__(self, space: gym.spaces.Box, flat: bool = False):
        shape = tuple(int(n) for n in space.shape)
        super().__init__(space, (int(np.prod(shape)),) if flat else shape)

    @property
    def norm_shape(self) -> tuple[int, ...]:
        return tuple(self.space.shape)

    def store(self, raw, normalize: Normalize = identity) -> np.ndarray:
        x = normalize(np.asarray(raw))
        return x.reshape(len(x), *self.shape).astype(np.float32, copy=False)


class DiscreteObs(Observation):
    """A Discrete observation, one-hot."""

    def __init__(self, space: gym.spaces.Discrete):
        super().__init__(space, (int(space.n),))

    @property
    def norm_shape(self) -> tuple[int, ...]:
        return ()  # (statistics kept, never applied: the shape earlier checkpoints have)

    def store(self, raw, normalize: Normalize = identity) -> np.ndarray:
        index = np.asarray(raw).astype(np.int64).reshape(-1) - int(self.space.start)
        return np.eye(self.shape[0], dtype=np.float32)[index]


def is_image(space: gym.Space) -> bool:
    """stable-baselines3's rule (is_image_space): a uint8 Box of 3 dimensions, 0..255."""
    return (
        isinstance(space, gym.spaces.Box)
        and len(space.shape) == 3
        and space.dtype == np.uint8
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


class ImageObs(Observation):
    """Pixels: uint8 in the rollout; float in [0, 1], channels first, in the network.
    Channels are first when the first dimension is the smallest, as SB3 decides."""

    is_vector = False

    def __init__(self, space: gym.spaces.Box):
        super().__init__(space, tuple(int(n) for n in space.shape), np.uint8)
        self.channels_last = int(np.argmin(self.shape)) != 0

    def input_shape(self) -> tuple[int, ...]:
        h, w, c = self.shape if self.channels_last else (*self.shape[1:], self.shape[0])
        return (c, h, w)

    def store(self, raw, normalize: Normalize = identity) -> np.ndarray:
        return np.asarray(raw, np.uint8)

    def to_input(self, x: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
        x = x.to(device)  # (as uint8: a quarter of float32's bytes to move)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        # one float copy, scaled in place; channels-last in memory where a gradient will flow
        # on the CPU (oneDNN's convolution backward is 1.3-2.7× faster so; the rollout's small
        # no-grad batches are faster as they are), made so here rather than copied again
        grad_on_cpu = torch.is_grad_enabled() and x.device.type == "cpu"
        fmt = torch.channels_last if grad_on_cpu else torch.preserve_format
        return x.to(dtype, memory_format=fmt, copy=True).div_(255.0)


class StructuredObs(Observation):
    """What DictObs and TupleObs share: one Observation per part, `keys` naming them."""

    is_vector = False
    normalized = True

    def __init__(self, space: gym.Space, keys: list, parts: list[gym.Space]):
        super().__init__(space, ())
        self.keys = keys
        self.parts = {}
        for key, part in zip(keys, parts, strict=True):
            if isinstance(part, gym.spaces.Dict | gym.spaces.Tuple):
                raise UserError(
                    f"observation space {space} is not supported: a {type(part).__name__} "
                    "inside a Dict or Tuple (nested spaces) is not; flatten it"
                )
            self.parts[key] = layout_for(part)
        self.vector_keys = [k for k in keys if self.parts[k].normalized]
        self.sizes = [int(np.prod(self.parts[k].shape)) for k in self.vector_keys]

    @property
    def norm_shape(self) -> tuple[int, ...]:
        return (sum(self.sizes),)

    def store(self, raw, normalize: Normalize = identity) -> dict:
        raw = {k: np.asarray(raw[k]) for k in self.keys}
        n = len(raw[self.keys[0]])
        if self.vector_keys:  # the vector parts, normalized as one vector
            flat = np.concatenate([raw[k].reshape(n, -1) for k in self.vector_keys], axis=1)
            pieces = np.split(normalize(flat), np.cumsum(self.sizes)[:-1], axis=1)
            for k, piece in zip(self.vector_keys, pieces, strict=True):
                raw[k] = piece
        return {k: self.parts[k].store(raw[k]) for k in self.keys}

    def _inputs(self, x: ObsBatch, dtype, device) -> list:
        return [self.parts[k].to_input(x.parts[k], dtype, device) for k in self.keys]

    def probe(self, n: int, dtype: torch.dtype):
        return self._pack([self.parts[k].probe(n, dtype) for k in self.keys])

    def to_input(self, x: ObsBatch, dtype: torch.dtype, device: torch.device):
        return self._pack(self._inputs(x, dtype, device))

    def _pack(self, inputs: list):
        raise NotImplementedError

    def empty(self, lead: tuple[int, ...]) -> dict:
        return {k: self.parts[k].empty(lead) for k in self.keys}

    def write(self, buffer: dict, t: int, x: dict) -> None:
        for k in self.keys:
            buffer[k][t] = x[k]

    def concat(self, xs: list[dict]) -> dict:
        return {k: np.concatenate([x[k] for x in xs]) for k in self.keys}

    def tensor(self, x: dict, device: torch.device | None = None) -> ObsBatch:
        return ObsBatch({k: self.parts[k].tensor(x[k], device) for k in self.keys})

    def one(self, raw) -> dict:
        return {k: self.parts[k].one(raw[k]) for k in self.keys}

    def batch_of(self, raw) -> tuple[dict, bool]:
        try:
            pairs = [self.parts[k].batch_of(raw[k]) for k in self.keys]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"observation {type(raw).__name__}: expected a {type(self.space).__name__} "
                f"observation with parts {self.keys}"
            ) from None
        single = {s for _, s in pairs}
        if len(single) > 1:
            raise ValueError("observation: some parts are batched and others not")
        return {k: x for k, (x, _) in zip(self.keys, pairs, strict=True)}, single.pop()


class DictObs(StructuredObs):
    """A Dict space: the network gets a dict of tensors, by the space's keys."""

    def __init__(self, space: gym.spaces.Dict):
        super().__init__(space, list(space.spaces), list(space.spaces.values()))

    def _pack(self, inputs: list) -> dict:
        return dict(zip(self.keys, inputs, strict=True))


class TupleObs(StructuredObs):
    """A Tuple space: the network gets a tuple of tensors."""

    def __init__(self, space: gym.spaces.Tuple):
        super().__init__(space, list(range(len(space.spaces))), list(space.spaces))

    def _pack(self, inputs: list) -> tuple:
        return tuple(inputs)


def layout_for(space: gym.Space, flat: bool = False) -> Observation:
    """The Observation class of `space` (flat: a Box vector flattened, for the MLP)."""
    if is_image(space):
        return ImageObs(space)
    if isinstance(space, gym.spaces.Box):
        return VectorObs(space, flat)
    if isinstance(space, gym.spaces.Discrete):
        return DiscreteObs(space)
    if isinstance(space, gym.spaces.Dict):
        return DictObs(space)
    if isinstance(space, gym.spaces.Tuple):
        return TupleObs(space)
    raise UserError(
        f"observation space {space} is not supported: use a Box, Discrete, Dict or Tuple "
        "observation space"
    )
