"""What a benchmark writes: results.csv, report.md (interquartile means with bootstrap
confidence intervals, steps/s ratios) and PNG learning and KL curves; `rl-trust plot`
draws the same curves for any runs."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from rl_trust import tags as T
from rl_trust.benchmark.curves import CURVES, export_curves, read_curve  # noqa: F401
from rl_trust.kl_control import KLBand

COLUMNS = (
    "library agent env seed steps final_return wall_time_s fps "
    "peak_rss_mib segments status error same_run_as"
).split()


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (rliable's aggregate)."""
    x = np.sort(np.asarray(x, float))
    n = len(x)
    lo, hi = int(math.floor(0.25 * n)), int(math.ceil(0.75 * n))
    return float(x[lo:hi].mean()) if hi > lo else float(x.mean())


def prob_improvement(x, y) -> float:
    """P(X > Y) for a seed of each library drawn at random, ties counting half (rliable's
    probability of improvement; the Mann-Whitney U statistic over len(x)·len(y))."""
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def bootstrap_ci(*samples, stat=iqm, reps: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap of stat(*samples) over seeds, each sample resampled on its own
    (with one task, rliable's stratified bootstrap); e.g. bootstrap_ci(x) for the IQM,
    bootstrap_ci(x, y, stat=prob_improvement) for two libraries."""
    samples = [np.asarray(x, float) for x in samples]
    if any(len(x) < 2 for x in samples):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = [stat(*(x[rng.integers(0, len(x), len(x))] for x in samples)) for _ in range(reps)]
    return tuple(float(q) for q in np.quantile(stats, [(1 - level) / 2, (1 + level) / 2]))


def _versions() -> str:
    out = []
    for pkg in ("rl-trust", "torch", "stable-baselines3", "sb3-contrib", "gymnasium"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def summarize(rows: list[dict]) -> list[dict]:
    """One line per (env, agent): IQM and 95% CI of each library's final returns, the
    steps/s ratio rl-trust / SB3 over seeds paired by seed (median, min, max)."""
    out = []
    keys = dict.fromkeys((r["env"], r["agent"]) for r in rows)
    for env, agent in keys:
        line: dict = {"env": env, "agent": agent}
        by = {
            lib: {
                r["seed"]: r
                for r in rows
                if (r["env"], r["agent"], r["library"]) == (env, agent, lib) and r["status"] == "ok"
            }
            for lib in ("rl-trust", "sb3")
        }
        returns = {lib: [r["final_return"] for r in seeds.values()] for lib, seeds in by.items()}
        for lib, x in returns.items():
            line[lib] = (iqm(x), *bootstrap_ci(x)) if x else None
            line[f"{lib} seeds"] = len(x)
        x, y = returns["rl-trust"], returns["sb3"]
        p_ci = bootstrap_ci(x, y, stat=prob_improvement) if x and y else None
        line["p_better"] = (prob_improvement(x, y), *p_ci) if p_ci else None
        ratios = [
            by["rl-trust"][s]["fps"] / by["sb3"][s]["fps"] for s in by["rl-trust"] if s in by["sb3"]
        ]
        line["ratio"] = (float(np.median(ratios)), min(ratios), max(ratios)) if ratios else None
        for lib, seeds in by.items():  # (rows of benchmarks from before it was measured: none)
            rss = [r["peak_rss_mib"] for r in seeds.values() if r.get("peak_rss_mib")]
            line[f"{lib} rss"] = max(rss) if rss else None
        line["crashed"] = sum(
            1 for r in rows if (r["env"], r["agent"]) == (env, agent) and r["status"] == "crashed"
        )
        out.append(line)
    return out


def kl_band_stats(run_dir: Path) -> dict[str, float] | None:
    """How a PPO run held its KL: the fractions of updates whose exact mean KL(π_old‖π_new)
    lies in the band d_targ/band … band·d_targ (kl/in_band), above it and above 3·d_targ,
    and the largest, from kl/forward_mean, each update's kl/target (where the run logged it:
    an annealed d_targ moves) and the run's config.yaml; None for a run without a KL target
    (TRPO, SB3) or without the curve. `target` is the last update's d_targ."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    agent = (yaml.safe_load(path.read_text()) or {}).get("agent", {})
    curve = read_curve(run_dir, T.KL_FORWARD_MEAN)
    if "kl_band" not in agent or curve is None or not len(curve[1]):
        return None  # (an agent that holds no band has no kl_band: TRPO's δ is a bound)
    summary = Path(run_dir) / "summary.json"  # (its final kl/target: the d_targ it held,
    final = json.loads(summary.read_text())["final"] if summary.is_file() else {}  # per dim)
    d, d_targ = curve[1], np.full(len(curve[1]), final.get(T.KL_TARGET, agent["kl_target"]))
    targets = read_curve(run_dir, T.KL_TARGET)
    if targets is not None and np.array_equal(targets[0], curve[0]):
        d_targ = targets[1]
    band = KLBand(d_targ, agent["kl_band"])  # (elementwise: one band per update)
    return {
        "in_band": float(np.mean((d >= band.low) & (d <= band.high))),
        "above": float(np.mean(d > band.high)),
        "above_3x": float(np.mean(d > 3 * band.target)),
        "max": float(d.max()),
        "target": float(d_targ[-1]),
        "updates": len(d),
    }


def kl_control(rows: list[dict], out: Path, baseline: str = "ppo-clip") -> list[dict]:
    """Per (env, agent) of our PPO runs: the KL band statistics pooled over every update of
    every seed (kl_band_stats), the final return's IQM with its CI, and P(agent > baseline) over
    seeds with its CI where the matrix has the baseline."""
    from rl_trust.benchmark.matrix import Trial

    ours = [r for r in rows if r["library"] == "rl-trust" and r["status"] == "ok"]
    returns: dict[tuple[str, str], list[float]] = {}
    stats: dict[tuple[str, str], list[dict]] = {}
    for r in ours:
        key = (r["env"], r["agent"])
        returns.setdefault(key, []).append(float(r["final_return"]))
        run = out / "tb" / Trial(r["library"], r["agent"], r["env"], int(r["seed"])).name / "run"
        if (s := kl_band_stats(run)) is not None:
            stats.setdefault(key, []).append(s)
    lines = []
    for (env, agent), per_seed in stats.items():
        x = returns[(env, agent)]
        y = returns.get((env, baseline))
        weights = [s["updates"] for s in per_seed]  # every update of every seed weighs one
        pooled = {
            k: float(np.average([s[k] for s in per_seed], weights=weights))
            for k in ("in_band", "above", "above_3x")
        }
        line = {
            "env": env,
            "agent": agent,
            "seeds": len(per_seed),
            "target": per_seed[0]["target"],
            **pooled,
            "max": max(s["max"] for s in per_seed),
            "return": (iqm(x), *bootstrap_ci(x)),
            "p_baseline": (prob_improvement(x, y), *bootstrap_ci(x, y, stat=prob_improvement))
            if y and agent != baseline
            else None,
        }
        lines.append(line)
    return lines


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "–"
    mid, lo, hi = x
    d = digits
    return f"{mid:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]" if not math.isnan(lo) else f"{mid:.{d}f}"


def _kl_control_section(rows: list[dict], out: Path) -> list[str]:
    """The KL control table (kl_control), where the matrix has PPO runs of ours."""
    lines = kl_control(rows, out)
    if not lines:
        return []
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    text = [
        "",
        "KL control (rl-trust's PPO runs): the exact mean KL(π_old‖π_new) of every update of "
        "every seed against the run's d_targ: in band d_targ/1.5 … 1.5·d_targ (kl/in_band), "
        "above 1.5·d_targ, above 3·d_targ, and the largest; the final return's IQM [95% CI]; "
        "P(agent > ppo-clip): a seed of the agent against a seed of our ppo-clip on the same "
        "env, ties half, with its bootstrap interval.",
        "",
        "| env | agent | d_targ | in band | above | above 3× | max KL | IQM [95% CI] "
        "| P(agent > ppo-clip) | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in lines:
        text.append(
            f"| {c['env']} | {c['agent']} | {c['target']:g} | {pct(c['in_band'])} "
            f"| {pct(c['above'])} | {pct(c['above_3x'])} | {c['max']:.4f} "
            f"| {_fmt(c['return'])} | {_fmt(c['p_baseline'], 2)} | {c['seeds']} |"
        )
    return text


def publish(
    rows: list[dict], out: Path, command: str, caveats: dict[tuple[str, str], list[str]]
) -> str:
    """A benchmark's outputs in OUT from its rows: results.csv, the plots and report.md
    (whose text is returned)."""
    write_csv(rows, out / "results.csv")
    plots = benchmark_plots(rows, out)
    return write_report(rows, out / "report.md", command, plots, caveats)


def write_report(
    rows: list[dict],
    path: Path,
    command: str,
    plots: list[Path],
    caveats: dict[tuple[str, str], list[str]] | None = None,
) -> str:
    lines = _results_table(rows, command)
    if caveats:
        lines += ["", "Where SB3 does not run what ours runs:", ""]
        lines += [f"- {env} {agent}: {c}" for (env, agent), cs in caveats.items() for c in cs]
    lines += _kl_control_section(rows, path.parent)
    lines += _notes(rows)
    if plots:
        lines += ["", *(f"![{p.stem}]({p.name})" for p in plots)]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def _results_table(rows: list[dict], command: str) -> list[str]:
    """The report's head (command, machine, what the columns mean) and its table."""
    lines = [
        "# rl-trust benchmark",
        "",
        f"`{command}`",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}; {platform.node()}: {os.cpu_count()} CPU cores, "
        f"{platform.machine()}, Python {platform.python_version()}; {_versions()}.",
        "",
        "Final return: mean episode return over the last 10% of each run's steps; per env and "
        "agent the interquartile mean over seeds with its 95% bootstrap confidence interval. "
        "P(rl-trust > SB3): the probability that a seed of ours ends above a seed of SB3's, "
        "ties half (rliable's probability of improvement; 0.5: level). "
        "steps/s ratio: rl-trust over SB3 for the same seed, median [min, max] over seeds "
        "(trials run side by side: `scripts/bench_throughput.py` measures speed quietly). "
        "Peak RSS: the largest over seeds, MiB.",
        "",
        "| env | agent | rl-trust IQM [95% CI] | SB3 IQM [95% CI] | P(rl-trust > SB3) "
        "| seeds | steps/s ratio | peak RSS rl-trust / SB3 | crashed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarize(rows):
        ratio = (
            "–"
            if s["ratio"] is None
            else f"{s['ratio'][0]:.2f} [{s['ratio'][1]:.2f}, {s['ratio'][2]:.2f}]"
        )
        rss = " / ".join(
            "–" if s[f"{lib} rss"] is None else f"{s[f'{lib} rss']:.0f}"
            for lib in ("rl-trust", "sb3")
        )
        lines.append(
            f"| {s['env']} | {s['agent']} | {_fmt(s['rl-trust'])} | {_fmt(s['sb3'])} "
            f"| {_fmt(s['p_better'], 2)} "
            f"| {s['rl-trust seeds']} / {s['sb3 seeds']} | {ratio} | {rss} | {s['crashed']} |"
        )
    return lines


def _notes(rows: list[dict]) -> list[str]:
    """SB3 rows that repeat another's run, trials not run yet, and the crashed ones."""
    lines = []
    shared = [r for r in rows if r.get("same_run_as")]
    if shared:
        lines += [
            "",
            "SB3 has no KL penalty, so SB3's side of every PPO agent at the same settings (the"
            " penalty's and ppo-clip) is one clipped-PPO run per seed:"
            f" {len(shared)} SB3 rows repeat another's identical run (results.csv, same_run_as).",
        ]
    crashed = [r for r in rows if r["status"] == "crashed"]
    not_run = [r for r in rows if r["status"] == "not run"]
    if not_run:
        lines += ["", f"Not run yet: {len(not_run)} of {len(rows)} trials (a partial report)."]
    if crashed:
        lines += ["", "Crashed trials:", ""]
        lines += [
            f"- {r['library']} {r['agent']} {r['env']} seed {r['seed']}: {r['error']}"
            for r in crashed
        ]
    return lines


# ---------------------------------------------------------------------------- curves


def band(curves: list[tuple[np.ndarray, np.ndarray]], n: int = 200):
    """Mean and a 95% bootstrap band of the seeds' curves on a common step grid."""
    end = min(c[0][-1] for c in curves)
    grid = np.linspace(max(c[0][0] for c in curves), end, n)
    ys = np.stack([np.interp(grid, s, v) for s, v in curves])
    if len(ys) < 2:
        return grid, ys[0], ys[0], ys[0]
    rng = np.random.default_rng(0)
    means = ys[rng.integers(0, len(ys), (1000, len(ys)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975], axis=0)
    return grid, ys.mean(0), lo, hi


def _steps_formatter():
    from matplotlib.ticker import FuncFormatter

    def fmt(v: float, _pos) -> str:
        return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v / 1e3:g}k" if abs(v) >= 1e3 else f"{v:g}"

    return FuncFormatter(fmt)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, groups: dict[str, list[Path]], tag_spec: str, scales: dict[str, float]) -> None:
    """One line per group on one axis: the mean over its runs with a 95% band."""
    for label, runs in groups.items():
        for tag in tag_spec.split("|"):  # "a|b": the first tag each run has
            k = scales.get(tag, 1)
            curves = [(c[0], k * c[1]) for r in runs if (c := read_curve(r, tag)) is not None]
            if curves:
                x, mean, lo, hi = band(curves)
                what = f"{tag} × {k:g}" if k != 1 else tag
                (line,) = ax.plot(x, mean, label=f"{label} ({what}, {len(curves)} runs)")
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
                break
    ax.set_xlabel("env steps")
    ax.xaxis.set_major_formatter(_steps_formatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_groups(
    groups: dict[str, list[Path]],
    tags: list[str],
    path: Path,
    title: str = "",
    scales: dict[str, float] | None = None,
):
    """One panel per tag; one line (mean over its runs, with a band) per group. `scales`
    multiplies a tag's values (and says so in the legend)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tags), figsize=(5.5 * len(tags), 4), squeeze=False)
    for ax, tag_spec in zip(axes[0], tags, strict=True):
        _draw(ax, groups, tag_spec, scales or {})
        ax.set_title(tag_spec.replace("|", " / "))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_overview(panels: dict[tuple[str, str], dict[str, list[Path]]], path: Path, title: str):
    """The whole matrix at a glance: one panel per (env, agent), a row per env, with the
    agent's rl-trust and SB3 learning curves on the same axes."""
    envs = list(dict.fromkeys(e for e, _ in panels))
    agents = list(dict.fromkeys(a for _, a in panels))
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(envs), len(agents), figsize=(4.6 * len(agents), 3.4 * len(envs)), squeeze=False
    )
    for i, env in enumerate(envs):
        for j, agent in enumerate(agents):
            ax = axes[i][j]
            if (env, agent) not in panels:
                ax.set_visible(False)
                continue
            _draw(ax, panels[env, agent], T.ROLLOUT_EP_REW_MEAN, {})
            ax.set_title(f"{env} · {agent}", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def benchmark_plots(rows: list[dict], out: Path) -> list[Path]:
    """Per env: learning curves and KL curves, rl-trust against SB3, for every agent; and
    with more than one env or agent, overview.png: a panel per (env, agent)."""
    from rl_trust.benchmark.matrix import Trial
    from rl_trust.benchmark.sb3 import kl_dims

    paths = []
    panels: dict[tuple[str, str], dict[str, list[Path]]] = {}
    for r in rows:
        if r["status"] == "ok":
            name = r.get("same_run_as") or Trial(r["library"], r["agent"], r["env"], r["seed"]).name
            panel = panels.setdefault((r["env"], r["agent"]), {})
            panel.setdefault(r["library"], []).append(out / "tb" / name / "run")
    if len(panels) > 1:
        title = "learning curves (rollout/ep_rew_mean): mean over seeds with a 95% band"
        paths.append(plot_overview(panels, out / "overview.png", title))
    for env in dict.fromkeys(r["env"] for r in rows):
        here = [r for r in rows if r["env"] == env and r["status"] == "ok"]
        # an SB3 run that several agents share is drawn once, labelled with all of them
        sharing: dict[str, list[str]] = {}
        for r in here:
            if r.get("same_run_as"):
                sharing.setdefault(f"{r['same_run_as']}", []).append(r["agent"])
        groups: dict[str, list[Path]] = {}
        for r in here:
            if r.get("same_run_as"):
                continue
            name = Trial(r["library"], r["agent"], r["env"], r["seed"]).name
            agents = "/".join(dict.fromkeys([r["agent"], *sharing.get(name, [])]))
            groups.setdefault(f"{r['library']} {agents}", []).append(out / "tb" / name / "run")
        stem = env.replace("/", "_").replace(":", "_")
        paths.append(
            plot_groups(
                groups,
                [T.ROLLOUT_EP_REW_MEAN],
                out / f"{stem}-return.png",
                f"{env}: mean episode return",
            )
        )
        paths.append(
            plot_groups(
                groups,
                ["|".join([T.KL_FORWARD_MEAN, T.TRAIN_APPROX_KL, T.SB3_KL_DIVERGENCE_LOSS])],
                out / f"{stem}-kl.png",
                f"{env}: KL per update (rl-trust: exact; SB3: approx_kl)",
                # sb3-contrib's TRPO logs its KL averaged over the action dimensions
                scales={T.SB3_KL_DIVERGENCE_LOSS: kl_dims({"env_id": env})},
            )
        )
    return paths
