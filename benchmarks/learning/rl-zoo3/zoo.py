"""rl-zoo3's own training (`python -m rl_zoo3.train`) on the MuJoCo v5 envs, as a reference
beside the learning matrix (issue 32, item 2). Run with a Python that has rl-zoo3 2.9.2
(benchmarks/learning/rl-zoo3/run.sh sets one up and says how).

    python zoo.py conf   the hyperparameter copies keyed by the v5 ids (hyperparams/*.yml)
    python zoo.py run    train every (algo, env, seed) not complete yet, then its row
    python zoo.py report report.md from the rows in trials/ beside the published v3 marks
                         (rl-trust's Python: it uses rl_trust.benchmark's IQM and bootstrap)

rl-zoo3 2.9.2's hyperparams/ppo.yml and trpo.yml name the MuJoCo v4 envs; `conf` copies their
Hopper-v4, HalfCheetah-v4 and Walker2d-v4 entries, values unchanged (YAML anchors resolved),
under the v5 ids, and train.py reads the copy with -conf. Each run is rl-zoo3's train.py as it
is, with: -n STEPS (1M: the zoo's own n_timesteps for these envs), --seed, --num-threads 1 (as
the benchmark's trials), --eval-freq -1 (no periodic evaluation: its episodes would cost CPU
and change nothing in training), -tb (SB3's own TensorBoard events) and its own log folder.

A run's row (OUT/trials/rl-zoo3-<algo>-<env>-s<seed>.json) has the benchmark's columns
(library "rl-zoo3", agent the algo) plus eval_return:
  final_return  mean of rollout/ep_rew_mean over the points logged in the last 10% of the
                steps, the benchmark's definition for ours and SB3's (matrix.final_return)
  eval_return   the final model's mean return over 10 deterministic episodes, observations
                normalized with its frozen VecNormalize statistics (as rl-zoo3's enjoy.py);
                the kind of figure rl-zoo's published benchmark gives
Its curves go to OUT/tb/<trial>/run/curves.csv (the benchmark's format, which its plots read);
the event files stay beside it, uncommitted. A run that did not finish (no row) starts again
from scratch on the rerun: rl-zoo3's train.py continues a saved agent only with its step count
reset, so it does not resume a run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVS = {"Hopper-v5": "Hopper-v4", "HalfCheetah-v5": "HalfCheetah-v4", "Walker2d-v5": "Walker2d-v4"}
ALGOS = ("ppo", "trpo")
FINAL_FRACTION = 0.1  # as rl_trust.benchmark.matrix
CURVE_TAGS = ("rollout/ep_rew_mean", "train/approx_kl", "train/kl_divergence_loss")
# rl-baselines3-zoo's published marks (its benchmark.md: the trained agents of the v3 envs,
# evaluated deterministically); sb3-contrib's TRPO has no HalfCheetah row there.
PUBLISHED = {("ppo", "Hopper-v5"): 2410, ("ppo", "HalfCheetah-v5"): 5819,
             ("ppo", "Walker2d-v5"): 3479, ("trpo", "Hopper-v5"): 3618,
             ("trpo", "Walker2d-v5"): 4933}  # fmt: skip


def conf(out: Path) -> None:
    import rl_zoo3
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    source = Path(rl_zoo3.__file__).parent / "hyperparams"
    for algo in ALGOS:
        data = yaml.safe_load((source / f"{algo}.yml").read_text())
        copy = {v5: data[v4] for v5, v4 in ENVS.items()}
        header = (
            f"# rl-zoo3 {rl_zoo3.__version__}'s hyperparams/{algo}.yml entries for "
            f"{', '.join(ENVS.values())}, values unchanged\n"
            "# (anchors resolved), keyed by the v5 ids: rl-zoo3 names the v4 envs; train.py reads\n"
            "# this copy with -conf. Written by `python zoo.py conf` (rl-zoo3/zoo.py).\n"
        )
        text = header + yaml.safe_dump(copy, sort_keys=False, width=1000)
        (out / f"{algo}.yml").write_text(text)
        print(out / f"{algo}.yml")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under `folder` (rl-zoo3 nests them per run)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = ea.EventAccumulator(str(events), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in out.items()}


def final_return(points: list[tuple[int, float]], total: int) -> float:
    if not points:
        return math.nan
    last = [v for x, v in points if x >= (1 - FINAL_FRACTION) * total] or [points[-1][1]]
    return sum(last) / len(last)


def evaluate(algo: str, run: Path, env_id: str, seed: int, episodes: int = 10) -> float:
    """The final model's mean return over deterministic episodes (VecNormalize frozen)."""
    import numpy as np
    from rl_zoo3 import ALGOS as ZOO_ALGOS
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    model = ZOO_ALGOS[algo].load(run / f"{env_id}.zip", device="cpu")
    venv = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    stats = run / env_id / "vecnormalize.pkl"
    if stats.exists():
        venv = VecNormalize.load(str(stats), venv)
        venv.training, venv.norm_reward = False, False
    returns, obs, total = [], venv.reset(), 0.0
    while len(returns) < episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, _ = venv.step(action)
        total += float(venv.get_original_reward()[0] if stats.exists() else reward[0])
        if done[0]:  # (the env resets itself; the reward above is the episode's last)
            returns.append(total)
            total = 0.0
    venv.close()
    return float(np.mean(returns))


def run_one(algo: str, env_id: str, seed: int, steps: int, out: Path, hyperparams: Path) -> dict:
    name = f"rl-zoo3-{algo}-{env_id}-s{seed}"
    trial = out / "tb" / name
    shutil.rmtree(trial, ignore_errors=True)  # what an unfinished earlier run left
    (trial / "run").mkdir(parents=True)
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", env_id,
           "--seed", str(seed), "-conf", str(hyperparams / f"{algo}.yml"), "-n", str(steps),
           "--num-threads", "1", "--eval-freq", "-1", "--device", "cpu",
           "-f", str(trial / "logs"), "-tb", str(trial / "run"), "--verbose", "1"]  # fmt: skip
    row = {"library": "rl-zoo3", "agent": algo, "env": env_id, "seed": seed, "steps": None,
           "final_return": None, "eval_return": None, "wall_time_s": None, "fps": None,
           "status": "crashed", "error": "", "command": " ".join(["python", *cmd[1:]])}  # fmt: skip
    t0 = time.perf_counter()
    with (trial / "trial.log").open("w") as log:
        status = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    runs = sorted((trial / "logs" / algo).glob(f"{env_id}_*"))
    if status != 0 or not runs or not (runs[-1] / f"{env_id}.zip").exists():
        lines = (trial / "trial.log").read_text(errors="replace").strip().splitlines()
        row["error"] = f"exit {status}: {(lines or ['(no output)'])[-1]}"
        return row
    scalars = _scalars(trial / "run")
    curve = scalars.get("rollout/ep_rew_mean", [])
    done = max((x for points in scalars.values() for x, _ in points), default=steps)
    with (trial / "run" / "curves.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", "step", "value"])
        for tag in CURVE_TAGS:
            writer.writerows((tag, x, v) for x, v in scalars.get(tag, []))
    row.update(status="ok", steps=done, wall_time_s=wall, fps=done / wall,
               final_return=final_return(curve, done),
               eval_return=evaluate(algo, runs[-1], env_id, seed))  # fmt: skip
    return row


def report(out: Path) -> Path:
    """OUT/report.md: per algo and env, the IQM over the seeds run of the final return (the
    benchmark's figure for ours and SB3's) and of the deterministic return, beside the mark."""
    import numpy as np

    from rl_trust.benchmark.report import bootstrap_ci, iqm

    rows = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*.json"))]
    rows = [r for r in rows if r["status"] == "ok"]
    lines = [
        "# rl-zoo3's own train.py on MuJoCo v5, 1M steps",
        "",
        "`bash benchmarks/learning/rl-zoo3/run.sh` (rl-zoo3 2.9.2, its hyperparameters copied "
        "under the v5 ids: `hyperparams/`); this table: `python benchmarks/learning/rl-zoo3/"
        "zoo.py report`. One row per run in `trials/`.",
        "",
        "- final return: mean of `rollout/ep_rew_mean` over the last 10% of the steps, the "
        "benchmark's figure for rl-trust and SB3 (`benchmarks/learning/mujoco-zoo/report.md`);",
        "- deterministic: the final model over 10 deterministic episodes, its VecNormalize "
        "statistics frozen, the kind of figure rl-zoo publishes;",
        "- published: rl-baselines3-zoo's benchmark for the v3 envs. Where rl-zoo3's own final "
        "return here stays below it, the issue's mark becomes that final return (last column).",
        "",
        "| algo | env | seeds | final return IQM [95% CI] | per seed | deterministic IQM "
        "| steps/s | published (v3) | mark on v5 here |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for algo in ALGOS:
        for env_id in ENVS:
            runs = sorted((r for r in rows if (r["agent"], r["env"]) == (algo, env_id)),
                          key=lambda r: r["seed"])  # fmt: skip
            mark = PUBLISHED.get((algo, env_id))
            if not runs:
                lines.append(f"| {algo} | {env_id} | 0 | not run yet | | | | {mark or '–'} | |")
                continue
            final = np.array([r["final_return"] for r in runs])
            lo, hi = bootstrap_ci(final)
            ci = f" [{lo:.1f}, {hi:.1f}]" if len(final) > 1 else ""
            seeds = ", ".join(f"s{r['seed']} {r['final_return']:.1f}" for r in runs)
            reached = None if mark is None else min(mark, iqm(final))
            lines.append(
                f"| {algo} | {env_id} | {len(runs)} | {iqm(final):.1f}{ci} | {seeds} "
                f"| {iqm(np.array([r['eval_return'] for r in runs])):.1f} "
                f"| {np.median([r['fps'] for r in runs]):.0f} | {mark if mark else '–'} "
                f"| {'–' if reached is None else f'{reached:.1f}'} |"
            )
    lines += ["", "steps/s: the median over seeds, runs beside other work (not a speed figure)."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("conf")
    p.add_argument("--out", type=Path, default=HERE / "hyperparams")
    p = sub.add_parser("report")
    p.add_argument("--out", type=Path, default=HERE)
    p = sub.add_parser("run")
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--envs", default=",".join(ENVS))
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--hyperparams", type=Path, default=HERE / "hyperparams")
    args = parser.parse_args(argv)
    if args.command == "conf":
        conf(args.out)
        return 0
    if args.command == "report":
        print(report(args.out))
        return 0
    rows_dir = args.out / "trials"
    rows_dir.mkdir(parents=True, exist_ok=True)
    todo = [(a, e, s) for e in args.envs.split(",") for s in range(args.seeds)
            for a in args.algos.split(",")]  # fmt: skip
    rows, crashed = [], 0
    for i, (algo, env_id, seed) in enumerate(todo, 1):
        path = rows_dir / f"rl-zoo3-{algo}-{env_id}-s{seed}.json"
        row = json.loads(path.read_text()) if path.exists() else None
        if row is None or row["status"] != "ok" or row["steps"] < args.steps:
            row = run_one(algo, env_id, seed, args.steps, args.out, args.hyperparams)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(row, indent=2))
            tmp.replace(path)
            what = row["error"]
            if row["status"] == "ok":
                what = (f"return {row['final_return']:.1f} (deterministic "
                        f"{row['eval_return']:.1f}), {row['fps']:.0f} steps/s")  # fmt: skip
            print(f"[{i}/{len(todo)}] {path.stem}: {what}", flush=True)
        crashed += row["status"] != "ok"
        rows.append(row)
    with (args.out / "results.csv").open("w", newline="") as f:
        keys = [k for k in rows[0] if k != "command"]
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(args.out / "results.csv")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
