"""The config's gymnasium wrappers around each env, innermost first: read, imported and
applied. Each entry is "package.module.Class" or {"package.module.Class": {kwarg: value}}, a
form the config checked when it was loaded (config.RULES)."""

from __future__ import annotations

import importlib

import gymnasium as gym

from rl_trust.errors import UserError, one_line


def wrapper_entries(wrappers: list) -> list[tuple[str, dict]]:
    """The config's `wrappers` as (class path, kwargs) pairs."""
    out = []
    for entry in wrappers:
        ((path, kwargs),) = entry.items() if isinstance(entry, dict) else [(entry, {})]
        out.append((path, dict(kwargs or {})))
    return out


def wrapper_classes(wrappers: list) -> list[tuple[type, dict]]:
    """The config's `wrappers` as (class, kwargs), imported; a UserError for one that is not
    a class that can be imported."""
    out = []
    for path, kwargs in wrapper_entries(wrappers):
        module, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except Exception as e:  # ImportError, or whatever the module's code raised
            raise UserError(
                f"wrappers: cannot import {module!r} for {path} ({one_line(e)})"
            ) from None
        if not isinstance(cls, type) or not issubclass(cls, gym.Wrapper):
            raise UserError(f"wrappers: {path} is not a gymnasium.Wrapper class")
        out.append((cls, kwargs))
    return out


def apply_wrappers(env: gym.Env, wrappers: list) -> gym.Env:
    """`env` inside the config's `wrappers`, the first innermost; a UserError naming the
    wrapper that rejects its kwargs or the env."""
    for cls, kwargs in wrapper_classes(wrappers):
        try:
            env = cls(env, **kwargs)
        except gym.error.DependencyNotInstalled as e:
            raise UserError(
                f"wrappers: {cls.__name__} needs a package that is not installed: {e}"
            ) from None
        except Exception as e:  # TypeError for a kwarg, or the wrapper's own check of the env
            raise UserError(
                f"wrappers: {cls.__module__}.{cls.__name__}(**{kwargs}) failed: {one_line(e)}"
            ) from None
    return env
