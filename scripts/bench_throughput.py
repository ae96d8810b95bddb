"""Steps per second of rl-trust against stable-baselines3, same hyperparameters, one thread.

    python scripts/bench_throughput.py [--agents ppo-clip,ppo,trpo]
        [--envs CartPole-v1,Pendulum-v1,Hopper-v5] [--updates 22] [--out bench/throughput]
        [--preset-hparams] [--set KEY=VALUE ...]

Every trial is a whole process: `rl-trust train` for ours, `python -m rl_trust.benchmark.sb3`
for SB3's PPO or sb3-contrib's TRPO with the same resolved config (one adapter,
rl_trust/benchmark/sb3.py). Both train at SB3's defaults (n_envs 1, n_steps 2048; PPO batch
64 and 10 epochs, TRPO its own) for --updates rollouts. For ours the table splits the time
into env stepping, the policy during the rollout, and the update; the ceiling is the env
alone with random actions. --preset-hparams trains both at the env preset's own settings
instead (Atari: 8 envs, 128 steps, batch 256, 4 epochs), --updates rollouts of them; --set
changes ours (a setting SB3 has no counterpart for, such as precision=bfloat16, reaches
ours only). Trials already measured in --out are not rerun (--fresh to redo).
The last line is `min ratio X.XX`, the smallest ours/SB3 ratio in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

SB3_DEFAULTS = {  # the hyperparameters of SB3's PPO / sb3-contrib's TRPO that set the cost
    "ppo": {"n_envs": 1, "n_steps": 2048, "batch_size": 64, "n_epochs": 10},
    "trpo": {"n_envs": 1, "n_steps": 2048, "batch_size": 128, "n_critic_updates": 10},
}


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def run_process(cmd: list[str], logfile: Path) -> tuple[int, float]:
    """Run cmd to completion; returns its exit status and peak RSS in MiB."""
    with logfile.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def rl_trust_cmd() -> str:
    return str(Path(sys.executable).parent / "rl-trust")


def resolve(agent: str, env: str, updates: int, preset: bool, sets: list[str]):
    """The resolved config both libraries train, the `rl-trust train` arguments that give
    it, and its steps (`updates` rollouts)."""
    algo = "trpo" if agent in ("trpo", "npg") else "ppo"
    args = ["--agent", agent, "--env", env, "--seed", "0"]
    for key, value in ({} if preset else SB3_DEFAULTS[algo]).items():
        args += ["--set", f"{key}={value}"]
    for item in sets:
        args += ["--set", item]
    cfg = _config(args)
    steps = updates * int(cfg["agent"]["n_steps"]) * int(cfg["env"]["n_envs"])
    args += ["--steps", str(steps)]
    return _config(args), args, steps


def _config(args: list[str]) -> dict:
    out = subprocess.run([rl_trust_cmd(), "config", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_throughput: rl-trust config {' '.join(args)}: {out.stderr.strip()}")
    return yaml.safe_load(out.stdout)


_ceilings: dict[str, float] = {}  # by env config: measured once for all agents on it


def ceiling(cfg: dict, steps: int) -> float:
    """Steps/s of the env alone, as the config builds one (its wrappers included), random
    actions, reset when done; measured once per env config in this invocation."""
    key = json.dumps([cfg["env"], steps], sort_keys=True)
    if key not in _ceilings:
        _ceilings[key] = _env_alone(cfg, steps)
    return _ceilings[key]


def _env_alone(cfg: dict, steps: int) -> float:
    from rl_trust.config import from_dict
    from rl_trust.envs import make_env

    env = make_env(from_dict(cfg).env)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - t0
    env.close()
    return steps / elapsed


def trial(
    agent: str, env: str, updates: int, out: Path, fresh: bool, preset: bool, sets: list[str]
) -> dict:
    tags = (["preset"] if preset else []) + sets
    name = re.sub(r"[^\w.=-]", "_", "-".join([agent, env, *tags]))
    result_path = out / f"{name}.json"
    if result_path.exists() and not fresh:
        log(f"{name}: measured before, kept ({result_path})")
        return json.loads(result_path.read_text())
    cfg, args, steps = resolve(agent, env, updates, preset, sets)
    config_path = out / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = out / "ours" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"

    log(f"{name}: rl-trust, {steps} steps")
    cmd = [rl_trust_cmd(), "train", *args, "--run-dir", str(run_dir), "--no-progress"]
    status, ours_rss = run_process(cmd, out / f"{name}.ours.log")
    if status != 0:
        sys.exit(f"bench_throughput: rl-trust failed ({status}); see {out / f'{name}.ours.log'}")
    summary = json.loads((run_dir / "summary.json").read_text())

    log(f"{name}: SB3, {steps} steps")
    sb3_result = out / f"{name}.sb3.json"
    cmd = [sys.executable, "-m", "rl_trust.benchmark.sb3", str(config_path), str(sb3_result)]
    status, sb3_rss = run_process(cmd, out / f"{name}.sb3.log")
    if status != 0:
        sys.exit(f"bench_throughput: SB3 failed ({status}); see {out / f'{name}.sb3.log'}")
    sb3 = json.loads(sb3_result.read_text())

    row = {
        "agent": agent,
        "env": env,
        "settings": " ".join(tags) or "SB3 defaults",
        "ceiling": ceiling(cfg, min(steps, 20_000)),
        "steps": summary["steps"],
        "ours_fps": summary["fps"],
        "sb3_fps": sb3["fps"],
        "ratio": summary["fps"] / sb3["fps"],
        "seconds": summary["seconds"],
        "wall_time_s": summary["wall_time_s"],
        "ours_rss_mib": ours_rss,
        "sb3_rss_mib": sb3_rss,
        "ours_return": summary["final"].get("rollout/ep_rew_mean"),
        "sb3_return": sb3["ep_rew_mean"],
    }
    result_path.write_text(json.dumps(row, indent=2))
    log(f"{name}: ours {row['ours_fps']:.0f}, SB3 {row['sb3_fps']:.0f}: ×{row['ratio']:.2f}")
    return row


def table(rows: list[dict]) -> str:
    head = "| agent | env | settings | rl-trust steps/s | SB3 steps/s | ratio | env | policy |"
    head += " update | env alone steps/s | rl-trust / env alone | peak RSS MiB (ours / SB3) |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        s, wall = r["seconds"], r["wall_time_s"]
        share = {k: f"{100 * s[k] / wall:.0f}%" for k in ("env", "policy", "update")}
        lines.append(
            f"| {r['agent']} | {r['env']} | {r['settings']} | {r['ours_fps']:.0f} "
            f"| {r['sb3_fps']:.0f} | {r['ratio']:.2f} | {share['env']} | {share['policy']} "
            f"| {share['update']} | {r['ceiling']:.0f} | {r['ours_fps'] / r['ceiling']:.2f} "
            f"| {r['ours_rss_mib']:.0f} / {r['sb3_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", default="ppo-clip,ppo,trpo")
    p.add_argument("--envs", default="CartPole-v1,Pendulum-v1,Hopper-v5")
    p.add_argument("--updates", type=int, default=22, help="rollouts per trial")
    p.add_argument("--out", type=Path, default=Path("bench/throughput"))
    p.add_argument("--fresh", action="store_true", help="rerun trials measured before")
    p.add_argument(
        "--preset-hparams",
        action="store_true",
        help="the env preset's hyperparameters, not SB3's defaults",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of ours (repeatable)",
    )
    args = p.parse_args()
    out = args.out.resolve()
    (out / "ours").mkdir(parents=True, exist_ok=True)
    agents = [a for a in args.agents.split(",") if a]
    envs = [e for e in args.envs.split(",") if e]
    rows = [
        trial(a, e, args.updates, out, args.fresh, args.preset_hparams, args.set)
        for e in envs
        for a in agents
    ]

    import stable_baselines3
    import torch

    text = (
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"(1 thread), stable-baselines3 {stable_baselines3.__version__}, {args.updates} "
        "rollouts per trial, seed 0. env / policy / update: shares of rl-trust's training "
        "wall time.\n\n" + table(rows)
    )
    (out / "throughput.md").write_text(text + "\n")
    (out / "throughput.json").write_text(json.dumps({"rows": rows}))
    print(text)
    print(f"min ratio {min(r['ratio'] for r in rows):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
