"""Steps per second on one device, rl-trust with each vectorization against SB3 with each of
its vec envs, at an env preset's own settings (default: ppo-clip on ALE/Breakout-v5, 8 envs
× 128 steps, batch 256, 4 epochs; both libraries on the same device, float32 unless a row
says otherwise).

    python scripts/device_bench.py [--device cuda] [--agent ppo-clip] [--env ALE/Breakout-v5]
        [--updates 12] [--out bench/device]

Every trial is a whole process, one after another (nothing else running): `rl-trust train`
for ours (sync: one process; async: gymnasium's AsyncVectorEnv, a process per env; envpool:
EnvPool's C++ threads), `python -m rl_trust.benchmark.sb3 --vec-env dummy|subproc` for
SB3's PPO CnnPolicy with the same resolved config. steps/s: each library's own count over
its training loop (the same measure as scripts/bench_throughput.py). The table goes to
stdout and to OUT/device_bench.md; the last line is `best ratio X.XX`, ours at its fastest
over SB3's fastest.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_throughput import _config, log, rl_trust_cmd, run_process  # noqa: E402

OURS = [("sync", "float32"), ("async", "float32"), ("envpool", "float32"), ("envpool", "bfloat16")]
SB3 = ["dummy", "subproc"]


def ours(args, vectorization: str, precision: str, steps: int) -> dict:
    name = f"rl-trust-{vectorization}-{precision}"
    run_dir = args.out / "runs" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    cmd = [
        rl_trust_cmd(),
        "train",
        *base_args(args),
        "--steps",
        str(steps),
        "--set",
        f"device={args.device}",
        "--set",
        f"vectorization={vectorization}",
        "--set",
        f"precision={precision}",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    log(f"{name}: {steps} steps")
    status, rss = run_process(cmd, args.out / f"{name}.log")
    if status != 0:
        return {"name": name, "error": f"exit {status}, see {args.out / f'{name}.log'}"}
    summary = json.loads((run_dir / "summary.json").read_text())
    s, wall = summary["seconds"], summary["wall_time_s"]
    shares = " / ".join(f"{100 * s[k] / wall:.0f}%" for k in ("env", "policy", "update"))
    return {
        "name": name,
        "library": "rl-trust",
        "vectorization": vectorization,
        "precision": precision,
        "fps": summary["fps"],
        "rss": rss,
        "shares": shares,
    }


def sb3(args, vec_env: str, cfg_path: Path) -> dict:
    name = f"sb3-{vec_env}"
    result = args.out / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "rl_trust.benchmark.sb3",
        str(cfg_path),
        str(result),
        "--device",
        args.device,
        "--vec-env",
        vec_env,
    ]
    log(f"{name}")
    status, rss = run_process(cmd, args.out / f"{name}.log")
    if status != 0:
        return {"name": name, "error": f"exit {status}, see {args.out / f'{name}.log'}"}
    fps = json.loads(result.read_text())["fps"]
    return {
        "name": name,
        "library": "SB3",
        "vectorization": vec_env,
        "precision": "float32",
        "fps": fps,
        "rss": rss,
        "shares": "–",
    }


def base_args(args) -> list[str]:
    return ["--agent", args.agent, "--env", args.env, "--seed", "0"]


def table(rows: list[dict], best_sb3: float) -> str:
    lines = [
        "| library | vectorization | precision | steps/s | × SB3's best | peak RSS MiB "
        "| env / policy / update |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | |")
            continue
        ratio = r["fps"] / best_sb3 if best_sb3 else float("nan")
        lines.append(
            f"| {r['library']} | {r['vectorization']} | {r['precision']} "
            f"| {r['fps']:.0f} | {ratio:.2f} | {r['rss']:.0f} | {r['shares']} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--agent", default="ppo-clip")
    p.add_argument("--env", default="ALE/Breakout-v5")
    p.add_argument("--updates", type=int, default=12, help="rollouts per trial")
    p.add_argument("--out", type=Path, default=Path("bench/device"))
    args = p.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = _config(base_args(args) + ["--set", f"device={args.device}"])
    steps = args.updates * int(cfg["agent"]["n_steps"]) * int(cfg["env"]["n_envs"])
    cfg = _config(base_args(args) + ["--set", f"device={args.device}", "--steps", str(steps)])
    cfg_path = args.out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    rows = [sb3(args, v, cfg_path) for v in SB3]
    rows += [ours(args, v, prec, steps) for v, prec in OURS]
    best_sb3 = max((r["fps"] for r in rows if r.get("library") == "SB3"), default=0.0)
    best_ours = max((r["fps"] for r in rows if r.get("library") == "rl-trust"), default=0.0)

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    a, e = cfg["agent"], cfg["env"]
    text = (
        f"{datetime.now():%Y-%m-%d %H:%M}, {gpu}, torch {torch.__version__}, device "
        f"{args.device}; {args.agent} on {args.env}, {e['n_envs']} envs × {a['n_steps']} "
        f"steps, batch {a['batch_size']}, {a['n_epochs']} epochs, {args.updates} rollouts "
        f"({steps} steps) per trial, seed 0, torch threads {cfg['run']['torch_threads']}; "
        "env / policy / update: shares of rl-trust's training wall time.\n\n"
        + table(rows, best_sb3)
    )
    (args.out / "device_bench.md").write_text(text + "\n")
    (args.out / "device_bench.json").write_text(json.dumps({"rows": rows}, indent=2))
    print(text)
    print(f"best ratio {best_ours / best_sb3:.2f}" if best_sb3 else "best ratio nan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
