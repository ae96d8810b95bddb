"""MaskedCorridor with and without masks: how many env steps each run needs to solve it.

Reads the curves of the two committed benchmarks (benchmarks/masking: masked, and
benchmarks/masking/unmasked: `--set action_masking=off`), finds per run the first step at
which `rollout/ep_rew_mean` (the mean return of the last 100 episodes) reaches SOLVED, and
writes solve.md (a table per agent: solved runs, the median step, each seed's) and
solve.png (the return curves, masked against unmasked, median over seeds with the min–max
band). Run: python benchmarks/masking/solve_steps.py
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ENV = "rl_trust_MaskedCorridor-v0"
TAG = "rollout/ep_rew_mean"
SOLVED = 9.0  # of the corridor's 10: the last 100 episodes reach its end 9 times in 10
SEEDS = range(5)
SIDES = {"masked": HERE / "tb", "unmasked": HERE / "unmasked" / "tb"}
RUNS = {  # label: trial folder name without the seed
    "ppo": f"rl-trust-ppo-{ENV}",
    "ppo-clip": f"rl-trust-ppo-clip-{ENV}",
    "trpo": f"rl-trust-trpo-{ENV}",
    "MaskablePPO (sb3-contrib)": f"sb3-ppo-clip-{ENV}",
}


def curve(trial: Path) -> tuple[np.ndarray, np.ndarray] | None:
    path = trial / "run" / "curves.csv"
    if not path.exists():
        return None
    with path.open() as f:
        rows = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["tag"] == TAG]
    steps, values = zip(*sorted(rows), strict=True)
    return np.array(steps), np.array(values)


def solve_step(steps: np.ndarray, values: np.ndarray) -> int | None:
    hit = np.flatnonzero(values >= SOLVED)
    return int(steps[hit[0]]) if hit.size else None


def main() -> None:
    lines = [
        "# MaskedCorridor: env steps to solve, with and without masks",
        "",
        "`python benchmarks/masking/solve_steps.py`, from the curves of "
        "[the masked benchmark](report.md) and [the unmasked one](unmasked/report.md) "
        "(`--set action_masking=off`, our agents only: MaskablePPO always masks). Each run "
        f"has 50,176 steps; solved: the first step at which `{TAG}` (the last 100 episodes) "
        f"reaches {SOLVED:g} of the corridor's 10. Seeds 0–4.",
        "",
        "| agent | masks | runs solved | median step solved | each seed's (– not solved) "
        "| final return, median |",
        "|---|---|---|---|---|---|",
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, (label, stem) in zip(axes, list(RUNS.items())[:3], strict=True):
        for side, root in SIDES.items():
            curves = [curve(root / f"{stem}-s{s}") for s in SEEDS]
            curves = [c for c in curves if c is not None]
            if not curves:
                continue
            solved = [solve_step(*c) for c in curves]
            hits = [s for s in solved if s is not None]
            median = f"{statistics.median(hits):,.0f}" if len(hits) == len(solved) else "–"
            finals = statistics.median(float(c[1][-1]) for c in curves)
            each = " / ".join(f"{s:,}" if s is not None else "–" for s in solved)
            lines.append(
                f"| {label} | {side} | {len(hits)} / {len(solved)} | {median} | {each} "
                f"| {finals:.1f} |"
            )
            grid = np.linspace(0, min(c[0][-1] for c in curves), 200)
            ys = np.array([np.interp(grid, *c) for c in curves])
            line = ax.plot(grid, np.median(ys, 0), label=side)[0]
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2, color=line.get_color())
        ax.axhline(SOLVED, color="grey", lw=0.8, ls="--")
        ax.set_title(f"rl-trust {label}")
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    # the reference: MaskablePPO, masked only
    stem = RUNS["MaskablePPO (sb3-contrib)"]
    curves = [c for c in (curve(SIDES["masked"] / f"{stem}-s{s}") for s in SEEDS) if c]
    if curves:
        solved = [solve_step(*c) for c in curves]
        hits = [s for s in solved if s is not None]
        median = f"{statistics.median(hits):,.0f}" if len(hits) == len(solved) else "–"
        each = " / ".join(f"{s:,}" if s is not None else "–" for s in solved)
        finals = statistics.median(float(c[1][-1]) for c in curves)
        lines.append(
            f"| MaskablePPO (sb3-contrib) | masked | {len(hits)} / {len(solved)} | {median} "
            f"| {each} | {finals:.1f} |"
        )
    axes[0].set_ylabel("return, last 100 episodes")
    axes[0].legend()
    fig.suptitle(
        "MaskedCorridor-v0 (256 actions, 4 legal per cell): masked against unmasked, "
        "median and min–max over seeds 0–4"
    )
    fig.tight_layout()
    fig.savefig(HERE / "solve.png", dpi=90)
    lines += ["", "![masked against unmasked](solve.png)", ""]
    (HERE / "solve.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
