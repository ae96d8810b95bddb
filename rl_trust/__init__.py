"""rl-trust: trust-region policy optimization you can see.

`rl_trust.PPO`, `rl_trust.TRPO` and `rl_trust.load` are the Python API (rl_trust/api.py),
imported on first use so that `rl-trust list` and the like start without torch;
`rl_trust.tune(...)` searches hyperparameters with Optuna (rl_trust/tune.py, a callable
module).
"""

from rl_trust._version import __version__

__all__ = ["PPO", "TRPO", "load", "tune", "__version__"]


def __getattr__(name: str):
    if name in ("PPO", "TRPO", "load"):
        from rl_trust import api

        return getattr(api, name)
    if name == "tune":
        import importlib

        return importlib.import_module("rl_trust.tune")
    raise AttributeError(f"module 'rl_trust' has no attribute {name!r}")
