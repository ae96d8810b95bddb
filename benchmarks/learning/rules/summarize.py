"""Summarize the rule study (run.sh): per env and variant, the final return (the mean of
rollout/ep_rew_mean over the last 10% of steps, as the benchmark reports it) of each tuning
seed and their mean, and how each run held its KL (kl_band_stats: the share of updates in
the band, above 3·d_targ, the largest). Runs not yet at their config's steps are left out.
Writes OUT/summary.md and prints it.

    python benchmarks/learning/rules/summarize.py [OUT]
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from rl_trust.benchmark.curves import export_curves
from rl_trust.benchmark.matrix import final_return
from rl_trust.benchmark.report import kl_band_stats


def main(out: Path) -> str:
    table: dict[tuple[str, int, str], dict[int, dict]] = defaultdict(dict)
    folder = out / "trials" if (out / "trials").is_dir() else out / "runs"  # (run.sh: runs/)
    for run in sorted(folder.iterdir()):
        summary = run / "summary.json"
        if not summary.is_file():
            continue
        variant, env, seed = re.fullmatch(r"(.+)-(\w+-v\d+)-s(\d+)", run.name).groups()
        if not (run / "curves.csv").exists():
            export_curves(run)
        steps = json.loads(summary.read_text())["steps"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        if steps < config["run"]["steps"]:
            continue  # (a run being extended, or cut short: its summary is of fewer steps)
        table[(env, config["run"]["steps"], variant)][int(seed)] = {
            "return": final_return(run, steps),
            "kl": kl_band_stats(run),
            "steps": steps,
        }
    lines = [
        "| env | steps | variant | seeds | final return per seed | mean "
        "| KL in band | > 3·d_targ | max KL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (env, budget, variant), seeds in sorted(table.items()):
        rets = [s["return"] for s in seeds.values() if s["return"] is not None]
        kls = [s["kl"] for s in seeds.values() if s["kl"] is not None]
        band = f"{np.mean([k['in_band'] for k in kls]):.0%}" if kls else "–"
        above = f"{np.mean([k['above_3x'] for k in kls]):.0%}" if kls else "–"
        top = f"{max(k['max'] for k in kls):.3f}" if kls else "–"
        per = ", ".join(f"{s}: {v['return']:.0f}" for s, v in sorted(seeds.items()))
        mean = f"{np.mean(rets):.0f}" if rets else "–"
        lines.append(
            f"| {env} | {budget:,} | {variant} | {len(seeds)} | {per} | {mean} | {band} "
            f"| {above} | {top} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/learning/rules")), end="")
