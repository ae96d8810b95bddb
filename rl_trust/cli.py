"""The `rl-trust` command: parsing and exit codes only; the work lives in the library.

Exit status: 0 done, 2 a user error (one line on stderr), 3 training diverged,
130 / 143 interrupted by SIGINT / SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
from pathlib import Path

from rl_trust import config
from rl_trust import tags as T
from rl_trust.errors import Diverged, UserError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, no usage dump
        self.exit(2, f"rl-trust: error: {message} (see {self.prog} --help)\n")


def _steps(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps {text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or not 1 <= value <= 10**12:
        raise argparse.ArgumentTypeError(f"--steps {text!r} must be a whole number in 1..10^12")
    return int(value)


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed {text!r} is not an integer") from None


def _step_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"--checkpoint {text!r} is not a step number")
    return int(text)


def _add_set(p: argparse.ArgumentParser, what: str) -> None:
    """--set KEY=VALUE, repeatable, into args.overrides."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=what
    )


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agent",
        default="ppo",
        help="agent preset (rl-trust list) or preset file (path/to/agent.yaml); default ppo",
    )
    p.add_argument("--env", default="CartPole-v1", help="gymnasium env id; default CartPole-v1")
    p.add_argument(
        "--env-preset",
        type=Path,
        metavar="FILE",
        help="an env preset file to use instead of the env's own preset",
    )
    p.add_argument("--steps", type=_steps, help="total env steps (1e6 accepted)")
    p.add_argument("--seed", type=_seed, help="random seed")
    _add_set(p, "override a config key (repeatable)")


_ALLOW_IMPORT = "import the module a run's module:Env id names (runs its code)"


def build_parser() -> Parser:
    parser = Parser(prog="rl-trust", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _train_parser(sub)
    _resume_parser(sub)
    _eval_parser(sub)
    _benchmark_parser(sub)
    _tune_parser(sub)
    _plot_parser(sub)
    _config_parser(sub)
    _list_parser(sub)
    _board_parser(sub)
    return parser


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train an agent; prints the run folder last on stdout")
    _add_config_args(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--runs-root",
        type=Path,
        default=Path("runs"),
        help="parent of the run folder (default runs/)",
    )
    where.add_argument(
        "--run-dir", type=Path, help="the run folder itself (must not exist or be empty)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")


def _resume_parser(sub) -> None:
    p = sub.add_parser("resume", help="continue a run from its last checkpoint")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=_steps, help="new total env steps")
    p.add_argument(
        "--checkpoint",
        type=_step_number,
        metavar="STEP",
        help="resume from this step's checkpoint (default: the newest); newer ones "
        "move to RUN_DIR/superseded/",
    )
    p.add_argument("--allow-import", action="store_true", help=_ALLOW_IMPORT)
    p.add_argument("--no-progress", action="store_true")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run's policy; writes eval.json (and videos)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--deterministic", action="store_true", help="the mode, not a sample")
    p.add_argument("--video", action="store_true", help="an mp4 per episode in RUN_DIR/videos/")
    p.add_argument("--seed", type=_seed, help="first episode's seed (default: run seed + 10000)")
    p.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="cap an episode of an env without a time limit at N steps, with a warning "
        "(default: the run's eval_max_steps, 10000)",
    )
    p.add_argument(
        "--env",
        metavar="ID|module:Class",
        help="the env to evaluate on instead of the run's (its spaces must match): a "
        "registered id, or an Env class or zero-argument factory of a module "
        "(with --allow-import): for a run trained on an env built in Python",
    )
    p.add_argument("--allow-import", action="store_true", help=_ALLOW_IMPORT)


def _benchmark_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="rl-trust against SB3 over agents × envs × seeds")
    p.add_argument("--agents", default="ppo,ppo-clip,trpo", help="comma-separated presets")
    p.add_argument("--envs", default="CartPole-v1,Pendulum-v1", help="comma-separated env ids")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--steps", type=_steps, help="env steps per trial (default: env preset's)")
    _add_set(p, "override a config key for every trial, both libraries")
    p.add_argument(
        "--libraries",
        choices=["rl-trust,sb3", "rl-trust"],
        default="rl-trust,sb3",
        metavar="rl-trust,sb3|rl-trust",
        help="rl-trust: no SB3 trials (comparisons among our agents only); SB3's side is its "
        "PPO or sb3-contrib's TRPO, and on an env with invalid-action masks sb3-contrib's "
        "MaskablePPO for every agent",
    )
    p.add_argument("--workers", type=int, default=1, help="trials at once (local backend)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start one here)")
    p.add_argument("--out", type=Path, default=Path("bench/benchmark"), help="results folder")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write results.csv, report.md and plots of the trials complete so far; run nothing",
    )


def _tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="hyperparameter search with Optuna; best.yaml and report.md")
    p.add_argument("--agent", default="ppo", help="agent preset or preset file; default ppo")
    p.add_argument("--env", default="CartPole-v1", help="gymnasium env id; default CartPole-v1")
    p.add_argument("--trials", type=int, default=20, help="trials in the study (default 20)")
    p.add_argument("--steps", type=_steps, help="env steps per trial and seed (default: preset's)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1 per trial (default 1)")
    p.add_argument(
        "--space", type=Path, metavar="FILE.yaml", help="search space (default: built-in)"
    )
    _add_set(p, "fix a config key in every trial (repeatable)")
    p.add_argument(
        "--eval-episodes",
        type=int,
        metavar="N",
        help="objective: N deterministic evaluation episodes after training",
    )
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default AGENT-ENV)")
    p.add_argument("--workers", type=int, default=1, help="worker processes here (default 1)")
    p.add_argument(
        "--backend", choices=["local", "ray"], default="local", help="ray: the workers as Ray tasks"
    )
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start one here)")
    p.add_argument("--pruner", choices=["median", "halving", "none"], default="median")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        metavar="S",
        help="seconds between a trial's heartbeats; 2 missed: retried (default 10)",
    )
    p.add_argument(
        "--sampler-seed",
        type=int,
        metavar="N",
        help="seed Optuna's sampler (worker i: N + i); default: unseeded",
    )
    p.add_argument("--out", type=Path, help="output folder (default runs/tune/AGENT-ENV)")


def _plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="PNG curves of runs (mean and band over runs per label)")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--tags",
        default=f"{T.ROLLOUT_EP_REW_MEAN},{T.KL_FORWARD_MEAN}",
        help="comma-separated tags; a|b plots the first of a, b a run has",
    )
    p.add_argument("--out", type=Path, default=Path("plot.png"))


def _config_parser(sub) -> None:
    p = sub.add_parser("config", help="print the resolved config as YAML")
    _add_config_args(p)
    p.add_argument(
        "--explain", action="store_true", help="every key: its value, its default and what it does"
    )


def _list_parser(sub) -> None:
    sub.add_parser("list", help="the agent and env presets, one line each")


def _board_parser(sub) -> None:
    p = sub.add_parser("board", help="start TensorBoard on a runs folder")
    p.add_argument("runs_root", nargs="?", type=Path, default=Path("runs"))
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--host", default="127.0.0.1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)  # a clean exit 143, not a kill
    try:
        return COMMANDS[args.command](args) or 0
    except UserError as e:
        print(f"rl-trust: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"rl-trust: training diverged: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:
        print(f"rl-trust: {args.command} interrupted", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load(args) -> config.RunConfig:
    return config.load(
        args.agent,
        args.env,
        config.parse_overrides(args.overrides),
        args.steps,
        args.seed,
        args.env_preset,
    )


def cmd_train(args) -> int:
    from rl_trust import train

    cfg = _load(args)
    folder = train.prepare(cfg, args.run_dir, args.runs_root)
    try:
        return _train(cfg, folder, progress=not args.no_progress)
    except KeyboardInterrupt:  # before training took over the signals: nothing to keep
        shutil.rmtree(folder.path, ignore_errors=True)
        raise


def cmd_resume(args) -> int:
    from rl_trust import train
    from rl_trust.runs import RunFolder

    folder = RunFolder.open(args.run_dir)
    cfg = train.load_run_config(folder.path, args.steps)
    folder.check_trust(cfg, args.allow_import)
    return _train(
        cfg, folder, progress=not args.no_progress, resume_from=args.checkpoint, resume=True
    )


def _train(cfg, folder, progress: bool, resume: bool = False, resume_from=None) -> int:
    from rl_trust import train
    from rl_trust.trainer import Interrupted

    try:
        summary = train.run(cfg, folder, resume=resume, progress=progress, from_step=resume_from)
    except Interrupted as e:
        if not resume and e.step == 0:  # before the first update: the folder holds nothing
            shutil.rmtree(folder.path, ignore_errors=True)
            print(
                f"rl-trust: interrupted before the first update; removed {folder.path}",
                file=sys.stderr,
            )
            return e.code
        print(
            f"rl-trust: interrupted at step {e.step}; checkpoint saved. Resume with: "
            f"{folder.resume_hint(cfg)}",
            file=sys.stderr,
        )
        print(folder.path)
        return e.code
    ret = summary["final"].get(T.ROLLOUT_EP_REW_MEAN)
    returns = "no episode finished yet" if ret is None else f"mean episode return {ret:.1f}"
    print(
        f"done: {summary['steps']} steps, {summary['fps']:.0f} steps/s, {returns}", file=sys.stderr
    )
    print(folder.path)
    return 0


def cmd_eval(args) -> int:
    from rl_trust.evaluate import evaluate

    r = evaluate(
        args.run_dir,
        args.checkpoint,
        args.episodes,
        args.deterministic,
        args.video,
        args.seed,
        args.allow_import,
        args.max_steps,
        args.env,
    )
    print(
        f"{r['checkpoint']} ({'deterministic' if r['deterministic'] else 'sampled'} actions, "
        f"{r['episodes']} episodes): return {r['mean_return']:.1f} ± {r['std_return']:.1f}, "
        f"length {r['mean_length']:.1f} ± {r['std_length']:.1f}"
    )
    for path in r["videos"]:
        print(f"video: {path}")
    print(Path(args.run_dir) / "eval.json")
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that the benchmark stops as on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def cmd_benchmark(args) -> int:
    from rl_trust.benchmark import matrix, report

    if not (1 <= args.seeds <= 1000 and 1 <= args.workers <= 1024):
        raise UserError("--seeds must be in 1..1000 and --workers in 1..1024")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731
    agents, envs = split(args.agents), split(args.envs)
    if not agents or not envs:
        raise UserError("--agents and --envs must each name at least one: the matrix is empty")
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: name a folder")
    if args.report_only and not out.is_dir():
        raise UserError(f"--out {out} does not exist: nothing to report (run the benchmark)")
    trials = matrix.matrix(
        agents, envs, args.seeds, args.steps, tuple(args.overrides), args.libraries.split(",")
    )
    if args.report_only:  # what is complete so far, without running anything
        rows = matrix.reported_rows(trials, out)
    else:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            rows = matrix.run_matrix(trials, out, args.workers, args.backend, args.ray_address)
        except KeyboardInterrupt as e:  # the running trials were stopped; finished ones kept
            ok = sum(r["status"] == "ok" for r in matrix.recorded_rows(trials, out).values())
            print(
                f"rl-trust: benchmark interrupted with {ok} of {len(trials)} trials complete in "
                f"{out}; run the same command again to resume",
                file=sys.stderr,
            )
            return 143 if isinstance(e, _Terminated) else 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    # the command that runs the matrix (--report-only only rewrites its report)
    command = " ".join(["rl-trust", *(a for a in sys.argv[1:] if a != "--report-only")])
    print(report.publish(rows, out, command, matrix.caveats(trials)), end="")
    print(out / "report.md")
    return 0 if all(r["status"] in ("ok", "not run") for r in rows) else 1


def cmd_tune(args) -> int:
    from rl_trust import tune

    try:
        result = tune.tune(
            args.agent,
            args.env,
            args.trials,
            args.steps,
            args.seeds,
            args.space,
            args.storage,
            args.study,
            args.workers,
            args.pruner,
            args.out,
            args.eval_episodes,
            config.parse_overrides(args.overrides),
            args.heartbeat,
            args.sampler_seed,
            args.backend,
            args.ray_address,
        )
    except KeyboardInterrupt:
        print(
            "rl-trust: the running trials saved a checkpoint; run the same command again to "
            "continue the study",
            file=sys.stderr,
        )
        raise
    print(result.report)
    return 0 if result.best_value is not None else 1


def cmd_plot(args) -> int:
    from rl_trust.benchmark.report import CURVES, plot_groups

    for run in args.run_dirs:  # a committed benchmark run keeps its curves in curves.csv
        if not any(Path(run).rglob("events.out.tfevents.*")) and not (Path(run) / CURVES).exists():
            raise UserError(f"{run} holds no TensorBoard event files (nor a {CURVES})")
    if not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: folder {args.out.parent} does not exist")
    groups = {str(run): [run] for run in args.run_dirs}
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    print(plot_groups(groups, tags, args.out))
    return 0


def cmd_config(args) -> int:
    cfg = _load(args)
    print(config.explain(cfg) if args.explain else cfg.to_yaml(), end="")
    return 0


def cmd_list(args) -> int:
    for kind in ("agents", "envs"):
        print(f"{kind}:")
        for name, path in config.presets(kind).items():
            print(f"  {name:<18} {config.preset_description(path)}")
    return 0


def cmd_board(args) -> int:
    from rl_trust.board import serve

    return serve(args.runs_root, args.host, args.port)


COMMANDS = {
    "train": cmd_train,
    "resume": cmd_resume,
    "eval": cmd_eval,
    "benchmark": cmd_benchmark,
    "tune": cmd_tune,
    "plot": cmd_plot,
    "config": cmd_config,
    "list": cmd_list,
    "board": cmd_board,
}

if __name__ == "__main__":
    sys.exit(main())
