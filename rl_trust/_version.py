"""The package's version, in a module of its own so that what a checkpoint records
(trainer.versions) does not import the package's front door (rl_trust/__init__.py, which
loads the Python API on first use)."""

__version__ = "0.1.0"
