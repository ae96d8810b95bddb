"""Trust-region math shared by the agents: pure functions, each tested against a reference."""

from __future__ import annotations


def adapt_beta(
    beta: float, d: float, d_targ: float, band: float = 1.5, factor: float = 2.0
) -> float:
    """PPO's adaptive KL coefficient (Schulman et al. 2017, section 4), applied once per update:

        d < d_targ / 1.5  →  β ← β / 2        d > 1.5 · d_targ  →  β ← 2β

    A non-finite d leaves β as it is: it says nothing about how far the policy moved.
    """
    if not d == d or d in (float("inf"), float("-inf")):
        return beta
    if d < d_targ / band:
        return beta / factor
    if d > d_targ * band:
        return beta * factor
    return beta
