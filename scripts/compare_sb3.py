"""Measure rl-trust against stable-baselines3 side by side: same config, same seed.

For each (agent, env) this runs `rl-trust train` in a subprocess, then SB3 (PPO, or
sb3-contrib's TRPO) in another subprocess with the hyperparameters of the resolved
rl-trust config (`rl-trust config`), and prints a markdown table of mean episode return
(last 100 episodes) and steps/s for both. Trials run one after another.

    python scripts/compare_sb3.py --agents ppo,ppo-clip --envs CartPole-v1,Pendulum-v1 \
        --steps 100000 --seed 0 [--out /work/bench/compare]

Writes into --out: ours/ (the rl-trust run folders), sb3/ (one result JSON per trial),
configs/ (the resolved configs both sides used), logs/ (each subprocess's output),
compare.md (the table) and compare.json (the rows). Progress goes to stderr.

The translation from an rl-trust config to SB3 is rl_trust/benchmark/sb3.py's (what cannot
be translated is listed by its `sb3_caveats`). `--set KEY=VALUE` overrides reach both sides.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rl_trust.benchmark.sb3 import sb3_caveats

DEFAULT_OUT = Path("bench/compare")
PPO_AGENTS = ("ppo", "ppo-fixed", "ppo-clip")


# --------------------------------------------------------------------------------------
# The driver


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def find_rl_trust() -> str:
    beside = Path(sys.executable).parent / "rl-trust"
    if beside.exists():
        return str(beside)
    found = shutil.which("rl-trust")
    if not found:
        sys.exit("compare_sb3: cannot find the rl-trust command (install the package first)")
    return found


def common_args(agent: str, env: str, steps: int | None, seed: int, sets: list[str]) -> list[str]:
    args = ["--agent", agent, "--env", env, "--seed", str(seed)]
    if steps is not None:
        args += ["--steps", str(steps)]
    for kv in sets:
        args += ["--set", kv]
    return args


def resolve_config(rl_trust: str, args: list[str]) -> dict:
    cmd = [rl_trust, "config", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return yaml.safe_load(proc.stdout)


def _tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in lines[-n:])


def source_fingerprint() -> str:
    """A hash of rl-trust's source files: the code a trial ran, since the package is
    installed editable and may be edited while this script runs."""
    import hashlib
    from importlib.util import find_spec

    spec = find_spec("rl_trust")
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    root = Path(next(iter(spec.submodule_search_locations)))
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def run_ours(rl_trust: str, args: list[str], agent: str, env: str, out: Path):
    cmd = [rl_trust, "train", *args, "--runs-root", str(out / "ours"), "--no-progress"]
    logfile = out / "logs" / f"ours-{agent}-{env}.log"
    t0 = time.perf_counter()
    with logfile.open("w") as fh:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True)
        fh.write(proc.stdout)
    wall = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"rl-trust exited with {proc.returncode}; {logfile}:\n{_tail(logfile)}")
    run_dir = Path(lines[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, summary, wall


def run_sb3(config_path: Path, agent: str, env: str, out: Path) -> tuple[dict, float]:
    result_path = out / "sb3" / f"{agent}-{env}.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "rl_trust.benchmark.sb3", str(config_path), str(result_path)]
    logfile = out / "logs" / f"sb3-{agent}-{env}.log"
    t0 = time.perf_counter()
    with logfile.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.exists():
        raise RuntimeError(
            f"SB3 worker exited with {proc.returncode}; {logfile}:\n{_tail(logfile)}"
        )
    return json.loads(result_path.read_text()), wall


def _num(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, fmt)


def table(rows: list[dict]) -> str:
    head = [
        "agent",
        "env",
        "steps",
        "ours return",
        "SB3 return",
        "ours steps/s",
        "SB3 steps/s",
        "ratio (ours/SB3)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        steps = r["ours_steps"] if r["ours_steps"] is not None else r["sb3_steps"]
        if None not in (r["ours_steps"], r["sb3_steps"]) and r["ours_steps"] != r["sb3_steps"]:
            steps = f"{r['ours_steps']} / {r['sb3_steps']}"
        cells = [
            r["agent"],
            r["env"],
            "–" if steps is None else str(steps),
            _num(r["ours_return"], ".1f"),
            _num(r["sb3_return"], ".1f"),
            _num(r["ours_fps"], ".0f"),
            _num(r["sb3_fps"], ".0f"),
            _num(r["fps_ratio"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(args) -> int:
    out = args.out.resolve()
    for sub in ("ours", "sb3", "configs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rl_trust = args.rl_trust or find_rl_trust()
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    trials = [(a, e) for a in agents for e in envs]
    rows: list[dict] = []
    started = datetime.now().isoformat(timespec="seconds")
    for i, (agent, env) in enumerate(trials, 1):
        tag = f"[{i}/{len(trials)}] {agent} {env}"
        row: dict[str, Any] = {
            "agent": agent,
            "env": env,
            "seed": args.seed,
            "ours_steps": None,
            "sb3_steps": None,
            "ours_return": None,
            "sb3_return": None,
            "ours_fps": None,
            "sb3_fps": None,
            "fps_ratio": None,
            "caveats": [],
            "errors": [],
        }
        rows.append(row)
        trial_args = common_args(agent, env, args.steps, args.seed, args.overrides)
        try:
            cfg = resolve_config(rl_trust, trial_args)
        except RuntimeError as e:
            row["errors"].append(str(e))
            log(f"{tag}: cannot resolve the config: {e}")
            continue
        config_path = out / "configs" / f"{agent}-{env}.yaml"
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        row["caveats"] = sb3_caveats(cfg)
        row["config"] = str(config_path)

        log(f"{tag}: rl-trust started ({cfg['run']['steps']} steps)")
        before = source_fingerprint()
        row["ours_source"] = before
        try:
            run_dir, summary, wall = run_ours(rl_trust, trial_args, agent, env, out)
            row.update(
                ours_run=str(run_dir),
                ours_steps=summary["steps"],
                ours_return=summary["final"].get("rollout/ep_rew_mean"),
                ours_fps=summary["fps"],
                ours_wall_s=summary.get("wall_time_s"),
                ours_process_s=wall,
            )
            used = yaml.safe_load((run_dir / "config.yaml").read_text())
            if used != cfg:
                row["errors"].append(f"{run_dir}/config.yaml differs from {config_path}")
                log(f"{tag}: WARNING the run's config.yaml differs from `rl-trust config`")
            log(
                f"{tag}: rl-trust finished in {wall:.0f}s: return "
                f"{_num(row['ours_return'], '.1f')}, {summary['fps']:.0f} steps/s"
            )
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            row["errors"].append(f"rl-trust: {e}")
            log(f"{tag}: rl-trust FAILED: {e}")
        if source_fingerprint() != before:
            row["errors"].append("rl-trust's source changed while it ran: rerun this trial")
            log(f"{tag}: WARNING rl-trust's source files changed during the run")

        log(f"{tag}: SB3 started")
        try:
            result, wall = run_sb3(config_path, agent, env, out)
            row.update(
                sb3_algo=result["algo"],
                sb3_steps=result["steps"],
                sb3_return=result["ep_rew_mean"],
                sb3_fps=result["fps"],
                sb3_wall_s=result["wall_time_s"],
                sb3_process_s=wall,
            )
            log(
                f"{tag}: SB3 {result['algo']} finished in {wall:.0f}s: return "
                f"{result['ep_rew_mean']:.1f}, {result['fps']:.0f} steps/s"
            )
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            row["errors"].append(f"SB3: {e}")
            log(f"{tag}: SB3 FAILED: {e}")
        if row["ours_fps"] and row["sb3_fps"]:
            row["fps_ratio"] = row["ours_fps"] / row["sb3_fps"]

    sources = {r["ours_source"] for r in rows if "ours_source" in r}
    if len(sources) > 1:
        log(f"WARNING rl-trust's source changed between trials ({', '.join(sorted(sources))})")
    md = table(rows)
    print(md)
    notes = []
    for r in rows:
        for c in r["caveats"]:
            notes.append(f"- {r['agent']} / {r['env']}: {c}")
        for e in r["errors"]:
            notes.append(f"- {r['agent']} / {r['env']}: ERROR {e.splitlines()[0]}")
    command = " ".join([sys.executable, *sys.argv])
    text = (
        f"# rl-trust vs stable-baselines3\n\n`{command}`\n\n{started}, seed {args.seed}. "
        "Return: mean of the last 100 episodes at the end of training. steps/s: env steps "
        "over training wall time (rl-trust: summary.json fps; SB3: model.learn).\n\n"
        f"{md}\n"
    )
    if len(sources) > 1:
        notes.append(
            f"- rl-trust's source changed between trials ({', '.join(sorted(sources))}): "
            "rows ran different code (ours_source in compare.json)"
        )
    if notes:
        text += "\nNotes:\n\n" + "\n".join(dict.fromkeys(notes)) + "\n"
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_text(
        json.dumps(
            {"command": command, "started": started, "versions": _versions(), "rows": rows},
            indent=2,
        )
    )
    log(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")
    return 1 if any(r["errors"] for r in rows) else 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rl-trust", "stable-baselines3", "sb3-contrib", "torch", "gymnasium", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", default="ppo,ppo-clip", help="comma-separated agent presets")
    p.add_argument("--envs", default="CartPole-v1,Pendulum-v1", help="comma-separated env ids")
    p.add_argument("--steps", type=lambda s: int(float(s)), help="env steps (default: preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.add_argument("--rl-trust", help="the rl-trust command (default: beside this python)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
