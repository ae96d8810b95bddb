"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `checkpoints/step_<N>/` holding `tensors.safetensors` and
`state.json`. It is written under a temporary name and renamed into place, so a folder with
that name is always complete; the newest `keep` are kept.

`pack` turns a nested state (dicts, lists, tensors, numpy arrays, JSON scalars) into a
flat tensor dict plus a JSON tree whose tensor leaves name their key in the tensor dict;
`unpack` inverts it exactly, non-string dict keys included (optimizer states use ints).
"""

from __future__ import annotations

import json
import os
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
            tensors[path] = x.detach().contiguous().clone()
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


def save(run_dir: Path, step: int, state: dict, keep: int, name: str | None = None) -> Path:
    """Write `state` as checkpoints/step_<step>/ atomically; prune to the newest `keep`.
    With `name` (e.g. "best"), write checkpoints/<name>/ instead, outside the rotation."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"step_{step:012d}")
    tensors, tree = pack(state)
    for stale in root.glob(".tmp-*"):  # left by a process killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file(tensors, str(tmp / TENSORS))
        with open(tmp / STATE, "w") as f:
            json.dump(tree, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.glob("step_*") if (p / STATE).is_file() and (p / TENSORS).is_file()
    )


def load(path: Path) -> dict:
    """A checkpoint folder's state; never unpickles anything."""
    try:
        tensors = load_file(str(Path(path) / TENSORS))
        tree = json.loads((Path(path) / STATE).read_text())
        return unpack(tensors, tree)
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError, ValueError) as e:
        raise UserError(f"checkpoint {path} cannot be read: {e.__class__.__name__}: {e}") from None
