"""Measuring rl-trust against stable-baselines3."""
