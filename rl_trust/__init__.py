"""rl-trust: trust-region policy optimization you can see."""

__version__ = "0.1.0"
