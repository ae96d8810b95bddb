"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `checkpoints/step_<N>/` (or `checkpoints/best/`) holding
`tensors.safetensors` and `state.json`. state.json records a format version, the SHA-256 of
the tensors file and of the state itself, and the state; `load` verifies all of it and the
state's schema. A checkpoint is written under a temporary name, read back verified, and
renamed into place; only then are checkpoints beyond the newest `keep` deleted.

`pack` turns a nested state (dicts, lists, tensors, numpy arrays, JSON scalars) into a
flat tensor dict plus a JSON tree whose tensor leaves name their key in the tensor dict;
`unpack` inverts it exactly, non-string dict keys included (optimizer states use ints).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rl_trust.errors import UserError

TENSORS, STATE = "tensors.safetensors", "state.json"


def pack(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().to("cpu", copy=True).contiguous()  # (from any device)
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(np.array(x, order="C"))  # (a copy; keeps 0-d shapes)
            return {"__ndarray__": path}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v, f"{path}.{k}") for k, v in x.items()}
            return {"__items__": [[k, walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, list | tuple):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, np.generic):
            return x.item()
        return x

    return tensors, walk(state, "s")


def unpack(tensors: dict[str, torch.Tensor], tree: Any) -> Any:
    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__ndarray__" in x:
                return tensors[x["__ndarray__"]].numpy()
            if "__items__" in x:
                return {k: walk(v) for k, v in x["__items__"]}
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(tree)


FORMAT = 1  # state.json's format version
NAME = re.compile(r"step_(\d+)")  # a rotated checkpoint; the only other name is BEST
BEST = "best"
# What a checkpoint's state holds at the top level: the type of each field.
SCHEMA: dict[str, type | tuple[type, ...]] = {
    "step": int,
    "updates": int,
    "best_eval": (float, int, type(None)),
    "policy": dict,
    "agent": dict,
    "normalizer": dict,
    "rng": dict,
    "episodes": dict,
    "spaces": dict,
    "config": dict,
    "versions": dict,
}


class Corrupt(UserError):
    """A checkpoint that exists but fails its integrity check (exit 2)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree_digest(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def inside(run_dir: Path, path: Path) -> bool:
    """Whether `path`, symlinks followed, stays inside the run folder."""
    return Path(path).resolve().is_relative_to(Path(run_dir).resolve())


def _root(run_dir: Path) -> Path:
    root = Path(run_dir) / "checkpoints"
    if (root.is_symlink() or root.exists()) and not inside(run_dir, root):
        raise UserError(f"{root} leads outside the run folder {run_dir}: refusing to use it")
    return root


def save(run_dir: Path, step: int, state: dict, keep: int, name: str | None = None) -> Path:
    """Write `state` as checkpoints/step_<step>/ atomically; once it reads back verified,
    prune to the newest `keep`. With `name` ("best"), write checkpoints/best/ instead,
    outside the rotation."""
    root = _root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"step_{step:012d}")
    if final.is_symlink():
        raise UserError(f"{final} is a symlink: refusing to write through it")
    tensors, tree = pack(state)
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:  # a killed writer's (one writer)
        if not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file(tensors, str(tmp / TENSORS))
        record = {
            "format": FORMAT,
            "step": step,
            "sha256": {TENSORS: sha256(tmp / TENSORS)},
            "state_sha256": _tree_digest(tree),
            "state": tree,
        }
        with open(tmp / STATE, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        load(tmp, expect_step=step)  # read back before anything older may go
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if name is None:
        for old in list_checkpoints(run_dir)[:-keep]:
            _remove(old)
    return final


def write_atomic(path: Path, text: str) -> None:
    """A text file of the run folder (config.yaml, summary.json) written whole: a reader sees
    the old one or the new one, never half of it."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: renamed aside first, so that a reader sees it whole or not
    at all."""
    aside = Path(tempfile.mkdtemp(prefix=".old-", dir=path.parent))
    os.replace(path, aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)


def step_of(path: Path) -> int | None:
    """The step a rotated checkpoint's folder name gives, None for any other name."""
    m = NAME.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The rotated checkpoints of a run (step_<digits> folders inside it), oldest first.
    Whether each is intact is for `load` to say."""
    root = _root(run_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if step_of(p) is not None and not p.is_symlink() and (p / STATE).is_file()
    ]
    return sorted(found, key=step_of)


def _check_schema(path: Path, state: Any, expect_step: int | None) -> None:
    def bad(what: str) -> Corrupt:
        return Corrupt(f"checkpoint {path} is not valid: {what}")

    if not isinstance(state, dict):
        raise bad(f"its state is {type(state).__name__}, not a mapping")
    for key, tp in SCHEMA.items():
        if key not in state:
            raise bad(f"field {key!r} is missing")
        value = state[key]
        if not isinstance(value, tp) or isinstance(value, bool):  # (bool is an int)
            raise bad(f"field {key!r} is {type(value).__name__}")
    for key in ("step", "updates"):
        if not 0 <= state[key] < 2**53:
            raise bad(f"{key} {state[key]} is out of range")
    if state["best_eval"] is not None and not math.isfinite(state["best_eval"]):
        raise bad(f"best_eval {state['best_eval']} is not finite")
    if expect_step is not None and state["step"] != expect_step:
        raise bad(f"its step {state['step']} is not the folder's {expect_step}")
    ep = state["episodes"]
    if not (
        isinstance(ep.get("count"), int)
        and ep["count"] >= 0
        and all(isinstance(ep.get(k), list) for k in ("returns", "lengths"))
        and all(isinstance(x, float | int) and math.isfinite(x) for x in ep["returns"])
        and all(isinstance(x, int) and x >= 0 for x in ep["lengths"])
    ):
        raise bad("episodes must hold a count ≥ 0, finite returns and lengths ≥ 0")
    if not all(isinstance(state["spaces"].get(k), str) for k in ("observation", "action")):
        raise bad("spaces must name the observation and action spaces")


def load(path: Path, expect_step: int | None = None) -> dict:
    """A checkpoint folder's state, verified: format version, SHA-256 of the tensors and of
    the state, schema, step equal to the folder's number, finite tensors. Never unpickles
    anything. A checkpoint that is gone raises FileNotFoundError (rotated away by a writer);
    one that fails a check raises Corrupt."""
    path = Path(path)
    expect_step = step_of(path) if expect_step is None else expect_step
    if not path.is_dir():
        raise FileNotFoundError(path)
    try:
        record = json.loads((path / STATE).read_text())
    except FileNotFoundError:
        if not path.is_dir():
            raise  # rotated away
        raise Corrupt(f"checkpoint {path} has no {STATE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise Corrupt(f"checkpoint {path} cannot be read: {e.__class__.__name__}: {e}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise Corrupt(f"checkpoint {path} is not an rl-trust checkpoint of format {FORMAT}")
    digests = record.get("sha256")
    if not isinstance(digests, dict) or set(digests) != {TENSORS}:
        raise Corrupt(f"checkpoint {path} lists no checksum for {TENSORS}")
    tree = record.get("state")
    if record.get("state_sha256") != _tree_digest(tree):
        raise Corrupt(f"checkpoint {path}: {STATE} fails its SHA-256 check")
    try:
        digest = sha256(path / TENSORS)
    except FileNotFoundError:
        if not path.is_dir():
            raise  # rotated away
        raise Corrupt(f"checkpoint {path} has no {TENSORS}") from None
    if digest != digests[TENSORS]:
        raise Corrupt(f"checkpoint {path}: {TENSORS} fails its SHA-256 check")
    try:
        tensors = load_file(str(path / TENSORS))
        state = unpack(tensors, tree)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as e:
        raise Corrupt(f"checkpoint {path} cannot be read: {e.__class__.__name__}: {e}") from None
    _check_schema(path, state, expect_step)
    if record.get("step") != state["step"]:
        raise Corrupt(f"checkpoint {path}: the step recorded beside the checksums differs")
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise Corrupt(f"checkpoint {path} holds non-finite values in {key}")
    return state


def newest(run_dir: Path, which: int | None = None, use_instead=None) -> tuple[Path, dict]:
    """The newest checkpoint (or the one at step `which`) that reads back verified. One that a
    concurrent writer rotates away mid-read is skipped for the next; one that fails its check
    is refused, naming the newest earlier one that verifies (`use_instead(step)` words the
    hint: the CLI's `use --checkpoint N`)."""
    use_instead = use_instead or (lambda step: f"use --checkpoint {step}")
    kept = list_checkpoints(run_dir)
    found = kept
    if which is not None:
        found = [p for p in kept if step_of(p) == which]
        if not found:
            names = ", ".join(str(step_of(p)) for p in kept) or "none"
            raise UserError(f"{run_dir} has no checkpoint at step {which} (kept: {names})")
    if not found:
        raise UserError(f"{run_dir} has no complete checkpoint")
    for i in range(len(found) - 1, -1, -1):
        try:
            return found[i], load(found[i])
        except FileNotFoundError:
            continue  # rotated away while we read it: the next one is newer than it was
        except Corrupt as e:
            raise Corrupt(f"{e}{_earlier_hint(kept, step_of(found[i]), use_instead)}") from None
    raise UserError(f"{run_dir}: every checkpoint was removed while reading it; try again")


def _earlier_hint(kept: list[Path], step: int, use_instead) -> str:
    """Where to go instead of the corrupt checkpoint at `step`: the newest earlier one that
    verifies."""
    earlier = [p for p in kept if step_of(p) < step]
    bad = []
    for p in reversed(earlier):
        try:
            load(p)
        except (Corrupt, FileNotFoundError):
            bad.append(str(step_of(p)))
            continue
        also = f" (step {', '.join(bad)} fails its check too)" if bad else ""
        return f"; the newest earlier one that verifies is step {step_of(p)}{also}: " + (
            use_instead(step_of(p))
        )
    if earlier:
        return f"; the earlier ones (step {', '.join(bad)}) fail their checks too"
    return "; no earlier checkpoint is kept"


def check_spaces(state: dict, spaces: dict[str, str], env_id: str) -> None:
    """A UserError unless the checkpoint was saved for these observation and action spaces."""
    saved = state["spaces"]
    if any(saved[k] != spaces[k] for k in ("observation", "action")):
        raise UserError(
            f"was saved for observation space {saved['observation']} and "
            f"action space {saved['action']}; {env_id} has "
            f"{spaces['observation']} and {spaces['action']}"
        )


# The spaces themselves, beside their names, so that a saved model predicts without its env:
# JSON (no pickle); a Box's bounds as one number when uniform, ±inf as strings.


def _numbers(a: np.ndarray) -> Any:
    def one(x):
        x = x.item()
        return x if isinstance(x, int) or math.isfinite(x) else str(x)

    flat = a.reshape(-1)
    if flat.size and (flat == flat[0]).all():
        return one(flat[0])
    return [one(x) for x in flat]


def _array(data: Any, shape: tuple, dtype) -> np.ndarray:
    values = np.array(data, dtype=np.float64)  # ("inf" / "-inf" parse as floats)
    values = np.broadcast_to(values, shape) if values.ndim == 0 else values.reshape(shape)
    return values.astype(dtype)


def describe_space(space) -> dict | None:
    """A JSON description of a gymnasium space that `build_space` turns back into an equal
    one; None for a kind of space rl-trust does not train on."""
    from gymnasium import spaces as s

    if isinstance(space, s.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _numbers(space.low),
            "high": _numbers(space.high),
        }
    if isinstance(space, s.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, s.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, s.MultiBinary):
        return {"type": "MultiBinary", "n": [int(n) for n in space.shape]}
    if isinstance(space, s.Dict | s.Tuple):
        parts = space.spaces.items() if isinstance(space, s.Dict) else enumerate(space.spaces)
        described = [[k, describe_space(v)] for k, v in parts]
        if any(d is None for _, d in described):
            return None
        if isinstance(space, s.Tuple):
            return {"type": "Tuple", "spaces": [d for _, d in described]}
        return {"type": "Dict", "spaces": described}
    return None


def build_space(d: Any):
    """The space `describe_space` described; a UserError for anything else."""
    from gymnasium import spaces as s

    try:
        kind = d["type"]
        if kind == "Box":
            shape, dtype = tuple(d["shape"]), np.dtype(d["dtype"])
            return s.Box(
                _array(d["low"], shape, dtype), _array(d["high"], shape, dtype), shape, dtype
            )
        if kind == "Discrete":
            return s.Discrete(int(d["n"]), start=int(d["start"]))
        if kind == "MultiDiscrete":
            return s.MultiDiscrete(d["nvec"], dtype=np.dtype(d["dtype"]), start=d["start"])
        if kind == "MultiBinary":
            n = d["n"]
            return s.MultiBinary(n[0] if len(n) == 1 else n)
        if kind == "Tuple":
            return s.Tuple([build_space(x) for x in d["spaces"]])
        if kind == "Dict":
            return s.Dict({k: build_space(v) for k, v in d["spaces"]})
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise UserError(f"a saved space cannot be rebuilt: {e.__class__.__name__}: {e}") from None
    raise UserError(f"a saved space of type {kind!r} cannot be rebuilt")


def saved_spaces(state: dict):
    """The observation and action spaces a checkpoint was saved for, rebuilt, or None when
    it predates their description (or they do not rebuild to the recorded ones)."""
    saved = state["spaces"]
    try:
        obs, act = (build_space(saved[k]) for k in ("observation_space", "action_space"))
    except (KeyError, UserError):
        return None
    if (str(obs), str(act)) != (saved["observation"], saved["action"]):
        return None
    return obs, act
