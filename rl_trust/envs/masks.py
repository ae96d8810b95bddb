"""Invalid-action masks: where an env's come from, and the check every one of them passes.

An env says which actions its current state allows in one of two ways, looked for in this
order:

1. a method `action_masks()` (sb3-contrib's convention), found through get_wrapper_attr, so a
   wrapper may provide it;
2. `info["action_mask"]` of reset and step (gymnasium's convention, e.g. Taxi-v4): with
   same-step autoreset, the step that ends an episode returns the next one's first info.

`action_masking` (EnvConfig): auto uses masks where the env provides them, on requires them,
off ignores them. A mask is one boolean (or 0/1 integer) per choice, True where allowed:
Discrete(n) n of them; MultiDiscrete its components' one after the other; MultiBinary one
per bit ("the bit may be set") or two per bit (may be 0, may be 1; sb3-contrib's). A mask of
the wrong shape or dtype, or one that allows no action, stops the run with one line naming
the env and the env step (`MaskError`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np

from rl_trust.envs.sync import MASK as INFO_KEY
from rl_trust.errors import MaskError, UserError
from rl_trust.nets.families import Bernoulli, Family, MultiCategorical

METHOD = "action_masks"
ALL = slice(None)


def _method_of(env) -> Callable | None:
    """A single env's action_masks(), through its wrappers, or None."""
    try:
        method = env.get_wrapper_attr(METHOD)
    except AttributeError:
        return None
    return method if callable(method) else None


def expected(family: Family, space: gym.Space) -> str:
    """What a mask of `space` is, for messages."""
    if isinstance(family, Bernoulli):
        n = family.sizes[0]
        return f"{n} booleans (a bit may be set) or {2 * n} (a bit may be 0, may be 1) for {space}"
    what = "per action" if len(family.sizes) == 1 else "per category of each component"
    return f"{family.mask_size} booleans, one {what} of {space}"


class Masks:
    """Reads the masks of `n` envs (a vector env's, or one env's: n = 1) and checks them.

    `read(info, envs)` gives the masks of the envs in slice `envs` after their latest
    reset or step, whose info is `info`: an (n_envs, family.mask_size) boolean array."""

    def __init__(
        self,
        family: Family,
        space: gym.Space,
        n: int,
        name: str,
        source: str,
        call: Callable[[slice], Sequence] | None = None,
        single: bool = False,
    ):
        self.family, self.space, self.n, self.name = family, space, n, name
        self.source = source  # "method" or "info", for messages and tests
        self.call = call  # method: the masks of the envs in a slice
        self.single = single  # one env's info: its mask, not a row per env
        self.step = 0  # env steps taken so far (across envs), for messages: set by the reader

    def __repr__(self) -> str:
        return f"Masks({self.name}, via {self.source})"

    def read(self, info: dict, envs: slice = ALL) -> np.ndarray:
        if self.call is not None:
            try:
                raw = self.call(envs)
            except UserError:
                raise
            except Exception as e:  # the env's own code
                raise MaskError(
                    f"env {self.name}: action_masks() raised {type(e).__name__}: {e} "
                    f"(env step {self.step})"
                ) from None
        else:
            raw = info.get(INFO_KEY) if isinstance(info, dict) else None
            if raw is None:
                raise MaskError(
                    f"env {self.name} gave no info[{INFO_KEY!r}] at env step {self.step}: "
                    "every reset and step must give one (or set action_masking=off)"
                )
            flags = info.get(f"_{INFO_KEY}")  # gymnasium's vector envs: which envs gave one
            if flags is not None and not np.all(flags):
                i = int(np.flatnonzero(~np.asarray(flags, bool))[0])
                raise MaskError(
                    f"env {self.name} (env {i}) gave no info[{INFO_KEY!r}] at env step "
                    f"{self.step}: every reset and step must give one (or set action_masking=off)"
                )
            if self.single:
                raw = [raw]
        return self.check(raw, envs)

    def check(self, raw, envs: slice = ALL) -> np.ndarray:
        """`raw`, the masks of the envs in `envs` one row each, as checked booleans."""
        n = len(range(*envs.indices(self.n)))
        k = self.family.mask_size
        arr = raw if isinstance(raw, np.ndarray) and raw.dtype != object else None
        if arr is None:
            try:
                arr = np.asarray(raw) if not isinstance(raw, list | tuple) else np.stack(raw)
            except (ValueError, TypeError):  # rows of different shapes
                arr = None
        if arr is None or arr.ndim != 2 or len(arr) != n:
            rows = list(raw) if isinstance(raw, list | tuple | np.ndarray) else [raw]
            i = self._first_bad(rows) if len(rows) == n else 0
            self._fail_row(rows[i], i)
        if arr.shape[1] != k and not (isinstance(self.family, Bernoulli) and 2 * arr.shape[1] == k):
            self._fail_row(arr[0], 0)
        if arr.dtype != bool:
            if not np.issubdtype(arr.dtype, np.integer):
                self._fail_row(arr[0], 0)
            bad = (arr != 0) & (arr != 1)
            if bad.any():
                i = int(np.flatnonzero(bad.any(1))[0])
                self._fail_row(arr[i], i)
            arr = arr.astype(bool)
        if arr.shape[1] != k:  # MultiBinary, one per bit: may be 0 always, may be 1 if set
            pairs = np.ones((n, k), bool)
            pairs[:, 1::2] = arr
            arr = pairs
        none = ~self._allows_some(arr)
        if none.any():
            i = int(np.flatnonzero(none)[0])
            self._fail(f"allows no action ({_show(arr[i])})", i)
        return arr

    def _allows_some(self, arr: np.ndarray) -> np.ndarray:
        """Per row: every component (or bit) has an allowed choice."""
        if isinstance(self.family, Bernoulli):
            return (arr[:, 0::2] | arr[:, 1::2]).all(1)
        starts = np.cumsum([0, *self.family.sizes[:-1]])
        return np.logical_or.reduceat(arr, starts, axis=1).all(1)

    def _first_bad(self, rows: list) -> int:
        """The index of the first row whose shape is not the one expected (else 0)."""
        k = self.family.mask_size
        for i, row in enumerate(rows):
            a = np.asarray(row) if not isinstance(row, np.ndarray) else row
            if a.dtype == object or a.shape not in ((k,), (k // 2,)):
                return i
        return 0

    def _fail_row(self, row, i: int):
        a = np.asarray(row) if not isinstance(row, np.ndarray) else row
        self._fail(
            f"has shape {a.shape} and dtype {a.dtype}; expected {expected(self.family, self.space)}"
            " (bool, or integers 0 and 1)",
            i,
        )

    def _fail(self, what: str, i: int):
        if self.step is None:  # masks given by hand (predict)
            row = f" of observation {i}" if self.n > 1 else ""
            raise MaskError(f"{self.name}: the mask{row} {what}")
        where = f" (env {i})" if self.n > 1 else ""
        raise MaskError(f"env {self.name}{where}: the action mask at env step {self.step} {what}")


def _show(row: np.ndarray) -> str:
    text = "".join("1" if v else "0" for v in row)
    return text if len(text) <= 80 else text[:77] + "..."


def given(family: Family, space: gym.Space, action_masks, n: int, single: bool) -> np.ndarray:
    """Masks given by hand (predict's action_masks): one, or one per observation of a batch
    of `n`, checked and as booleans, a row per observation."""
    if not supported(family):
        raise MaskError(f"predict(action_masks=...): action space {space} takes no masks")
    masks = Masks(family, space, n, "predict(action_masks=...)", "argument")
    masks.step = None
    return masks.check([action_masks] if single else action_masks)


def supported(family: Family) -> bool:
    return isinstance(family, MultiCategorical | Bernoulli)


def _unsupported(family: Family, space: gym.Space, name: str) -> MaskError:
    return MaskError(
        f"action_masking=on: env {name} has action space {space}, which takes no masks "
        "(Discrete, MultiDiscrete and MultiBinary do); set action_masking=off"
    )


def _none(name: str) -> MaskError:
    return MaskError(
        f"action_masking=on: env {name} provides no action masks (neither a method "
        f"{METHOD}() nor info[{INFO_KEY!r}]); set action_masking=auto or off"
    )


def for_env(env: gym.Env, info: dict, setting: str, family: Family, name: str) -> Masks | None:
    """The masks of one env (evaluation, predict), given its reset's info; None where
    masking is off or, under auto, where the env provides none."""
    if setting == "off":
        return None
    if not supported(family):
        if setting == "on":
            raise _unsupported(family, env.action_space, name)
        return None
    method = _method_of(env)
    if method is not None:
        return Masks(family, env.action_space, 1, name, "method", lambda _: [method()])
    if isinstance(info, dict) and INFO_KEY in info:
        return Masks(family, env.action_space, 1, name, "info", single=True)
    if setting == "on":
        raise _none(name)
    return None


def for_vector(env, info: dict, setting: str, family: Family, name: str) -> Masks | None:
    """The masks of a vector env's envs, given the info of its reset (rollout.Collector);
    None where masking is off or, under auto, where the envs provide none. Sync vector envs
    (ours, gymnasium's) are asked directly, gymnasium's async one through call(); EnvPool's
    envs and a model's missing env (api._NoEnv) provide none."""
    if setting == "off" or getattr(env, "provides_no_masks", False):
        return None
    space = env.single_action_space
    if not supported(family):
        if setting == "on":
            raise _unsupported(family, space, name)
        return None
    if hasattr(env, "halves"):  # overlap=true: refused where the envs provide masks
        found = _probe(env.first) is not None
        if found or setting == "on":
            raise UserError(
                f"overlap=true takes no action masks (env {name} provides them): set "
                "overlap=false, or action_masking=off to ignore them"
            )
        return None
    n = env.num_envs
    if hasattr(env, "envs"):  # in this process: each env's method, bound once
        methods = [_method_of(e) for e in env.envs]
        if all(m is not None for m in methods):
            return Masks(family, space, n, name, "method", lambda s: [m() for m in methods[s]])
    elif _probe(env) == "method":
        return Masks(family, space, n, name, "method", lambda s: _call(env, s))
    if isinstance(info, dict) and INFO_KEY in info:
        return Masks(family, space, n, name, "info")
    if setting == "on":
        raise _none(name)
    return None


def _call(env, envs: slice) -> list:
    out = env.call(METHOD)
    return list(out)[envs]


def _probe(env) -> str | None:
    """Whether the envs of an async vector env provide masks, and how: one env made in this
    process from its first env function is asked (its method; its reset's info)."""
    fns = getattr(env, "env_fns", None)
    if not fns:
        return None
    probe = fns[0]()
    try:
        if _method_of(probe) is not None:
            return "method"
        _, info = probe.reset(seed=0)
        return "info" if isinstance(info, dict) and INFO_KEY in info else None
    finally:
        probe.close()
