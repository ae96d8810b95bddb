"""Try a KL controller's settings on the tuning seeds (100-102), never on the reported ones.

    python benchmarks/kl-control/tune.py OUT --agent ppo-pid --set kl_smoothing=0.1 [--set ...]
        [--envs CartPole-v1,Acrobot-v1,Pendulum-v1,LunarLander-v3] [--seeds 100,101,102]
        [--steps N]

Trains each env × seed with `rl-trust train` (a run already complete under OUT is read, not
rerun), then prints per env the fractions of updates whose exact mean KL is in band, above
it and above 3·d_targ, the largest KL, and the final return (mean episode return over the
last 10% of steps) per seed: the figures the benchmark's report gives, on other seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from rl_trust.benchmark.matrix import final_return
from rl_trust.benchmark.report import kl_band_stats

CLASSIC = "CartPole-v1,Acrobot-v1,Pendulum-v1,LunarLander-v3"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--agent", default="ppo-pid")
    p.add_argument("--envs", default=CLASSIC)
    p.add_argument("--seeds", default="100,101,102")
    p.add_argument("--steps", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    rl_trust = os.environ.get("RL_TRUST", str(Path(sys.executable).with_name("rl-trust")))
    for env in a.envs.split(","):
        stats, returns = [], []
        for seed in a.seeds.split(","):
            run = a.out / f"{a.agent}-{env.replace('/', '_')}-s{seed}"
            if not (run / "summary.json").exists():
                cmd = [rl_trust, "train", "--agent", a.agent, "--env", env, "--seed", seed,
                       "--run-dir", str(run), "--no-progress"]  # fmt: skip
                cmd += ["--steps", a.steps] if a.steps else []
                for kv in a.set:
                    cmd += ["--set", kv]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            steps = json.loads((run / "summary.json").read_text())["steps"]
            stats.append(kl_band_stats(run))
            returns.append(final_return(run, steps))
        pooled = {k: np.mean([s[k] for s in stats]) for k in ("in_band", "above", "above_3x")}
        print(
            f"{env:16s} in band {pooled['in_band']:6.1%}  above {pooled['above']:5.1%}  "
            f"above 3× {pooled['above_3x']:5.1%}  max KL {max(s['max'] for s in stats):.4f}  "
            f"return {' '.join(f'{r:8.1f}' for r in returns)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
