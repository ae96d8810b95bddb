"""`rl-trust benchmark`: every (agent, env, seed) for rl-trust and its SB3 counterpart.

Each trial is its own process — `rl-trust train`, or `python -m rl_trust.benchmark.sb3` with
the same resolved config — writing TensorBoard events under OUT/tb/<trial> (SB3 through its
own logger, so the tags overlay) and its row to OUT/trials/<trial>.json. A trial with a row
of status "ok" is complete and skipped on a rerun; a crashed one is retried, and reported
if it crashes again. A trial cut short (the matrix stopped, the machine went away) continues
on the rerun from its own last checkpoint, every run.checkpoint_every steps: ours with
`rl-trust resume`, SB3's from the model and VecNormalize statistics it saves alongside.
Backends: a local pool of worker threads each driving one trial process, or Ray tasks (one
CPU each) whose trial folders travel back to OUT as tar archives (a Ray trial that is cut
short starts again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from rl_trust import checkpoint, config
from rl_trust import tags as T
from rl_trust.errors import UserError

# on an env whose invalid-action masks the config uses, SB3's side of every agent is
# sb3-contrib's MaskablePPO (benchmark/sb3.py), of a TRPO agent at this agent's settings
MASKED_REFERENCE = "ppo-clip"
FINAL_FRACTION = 0.1  # the final return: mean episode return over the last 10% of steps


@dataclasses.dataclass(frozen=True)
class Trial:
    library: str  # "rl-trust" or "sb3"
    agent: str
    env: str
    seed: int
    steps: int | None = None
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        env = self.env.replace("/", "_").replace(":", "_")
        return f"{self.library}-{self.agent}-{env}-s{self.seed}"

    def config(self) -> config.RunConfig:
        """The trial's resolved config; SB3's side of a TRPO agent on a masked env: the
        config of MASKED_REFERENCE (sb3-contrib's TRPO takes no masks, MaskablePPO does)."""
        overrides = config.parse_overrides(list(self.overrides))
        cfg = config.load(self.agent, self.env, overrides, self.steps, self.seed)
        if self.library == "sb3" and cfg.agent.algo != "ppo":
            from rl_trust.benchmark.sb3 import masked_env

            if masked_env(cfg.to_dict()["env"]):
                cfg = config.load(MASKED_REFERENCE, self.env, overrides, self.steps, self.seed)
        return cfg


def matrix(agents, envs, seeds, steps, overrides=(), libraries=("rl-trust", "sb3")) -> list[Trial]:
    """Every trial, ours beside SB3's (or of `libraries` only), after checking every agent and
    env resolves.

    Ordered env by env and, within an env, seed by seed, so that a matrix stopped halfway
    already holds complete pairs (ours and SB3's, same agent and seed) for a first comparison.
    """
    from rl_trust.envs import check_id

    for env in envs:
        check_id(env)
        for agent in agents:
            config.load(agent, env, config.parse_overrides(list(overrides)), steps, 0)
    return [
        Trial(library, agent, env, seed, steps, tuple(overrides))
        for env in envs
        for seed in range(seeds)
        for agent in agents
        for library in ("rl-trust", "sb3")
        if library in libraries
    ]


def final_return(tb_dir: Path, total: int) -> float:
    """Mean of rollout/ep_rew_mean over the points logged in the last 10% of the steps."""
    from rl_trust.benchmark.curves import read_curve

    curve = read_curve(tb_dir, T.ROLLOUT_EP_REW_MEAN)
    if curve is None:
        return float("nan")
    steps, values = curve
    last = [
        float(v) for x, v in zip(steps, values, strict=True) if x >= (1 - FINAL_FRACTION) * total
    ]
    last = last or [float(values[-1])]
    return sum(last) / len(last)


def resume_point(trial: Trial, tb_dir: Path) -> int | None:
    """The step a trial cut short can continue from (its newest checkpoint that verifies,
    written with the config the presets give it now), or None to start it afresh."""
    try:
        if trial.library == "rl-trust":
            run_dir = tb_dir / "run"
            path = run_dir / "config.yaml"
            found = checkpoint.newest(run_dir) if path.exists() else None
            step = None if found is None else checkpoint.step_of(found[0])
        else:
            from rl_trust.benchmark.sb3 import saved_step

            path = tb_dir / "config.yaml"
            step = saved_step(tb_dir / "sb3_checkpoint") if path.exists() else None
        if step is None:
            return None
        recorded = config.from_dict(yaml.safe_load(path.read_text())).to_dict()
        return step if recorded == trial.config().to_dict() else None
    except (UserError, OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None  # unreadable or corrupt: the trial starts again


def _trial_command(
    trial: Trial, tb_dir: Path, start: int | None, tmp: Path
) -> tuple[list[str], Path]:
    """The trial's process (ours: `rl-trust train`, or `resume` from its checkpoint; SB3's:
    the adapter) and where it leaves its result."""
    if trial.library == "rl-trust":
        run_dir = tb_dir / "run"
        result_path = run_dir / "summary.json"
        cli = [sys.executable, "-m", "rl_trust.cli"]
        if start is not None:
            result_path.unlink(missing_ok=True)  # (the summary of an earlier segment)
            return [*cli, "resume", str(run_dir), "--no-progress", "--allow-import"], result_path
        cmd = [*cli, "train", "--agent", trial.agent, "--env", trial.env]
        cmd += ["--seed", str(trial.seed), "--run-dir", str(run_dir), "--no-progress"]
        cmd += [a for o in trial.overrides for a in ("--set", o)]
        if trial.steps is not None:
            cmd += ["--steps", str(trial.steps)]
        return cmd, result_path
    # the config stays in the trial folder: what the trial ran (config_change)
    config_path, result_path = tb_dir / "config.yaml", tmp / "result.json"
    config_path.write_text(yaml.safe_dump(trial.config().to_dict(), sort_keys=False))
    cmd = [sys.executable, "-m", "rl_trust.benchmark.sb3", str(config_path), str(result_path)]
    cmd += [str(tb_dir / "run"), "--checkpoint", str(tb_dir / "sb3_checkpoint")]
    return cmd, result_path


def run_trial(trial: Trial, tb_dir: Path, note: Callable[[str], None] = lambda _: None) -> dict:
    """Run one trial in its own process, its events into tb_dir (continuing from its own
    checkpoint where an earlier attempt left one); returns its row."""
    trial.config()  # (a config the presets refuse stops here, before anything is removed)
    row = blank_row(trial, "ok")
    start = resume_point(trial, tb_dir)
    if start is None:
        shutil.rmtree(tb_dir, ignore_errors=True)  # what an incomplete earlier attempt left
        tb_dir.mkdir(parents=True)
    else:
        note(f"{trial.name}: continues from its checkpoint at step {start:,}")
    log = tb_dir / "trial.log"
    with tempfile.TemporaryDirectory() as tmp:
        cmd, result_path = _trial_command(trial, tb_dir, start, Path(tmp))
        _attempt(tb_dir, start or 0)
        status, rss = _run_child(cmd, log)
        attempts = _attempt(tb_dir, start or 0, (status, rss))
        known = [a["peak_rss_mib"] for a in attempts if a["peak_rss_mib"] is not None]
        row.update(peak_rss_mib=max(known), segments=len(attempts))
        if status != 0 or not result_path.exists():
            lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            row.update(status="crashed", error=f"exit {status}: {lines[-1]}")
            return row
        result = json.loads(result_path.read_text())
    from rl_trust.benchmark.curves import export_curves

    export_curves(tb_dir / "run")
    row.update(
        steps=result["steps"],
        wall_time_s=result["wall_time_s"],
        fps=result["fps"],
        final_return=final_return(tb_dir / "run", result["steps"]),
    )
    return row


def _attempt(tb_dir: Path, start: int, result: tuple[int, float] | None = None) -> list[dict]:
    """Record in tb_dir/attempts.json that a process starts the trial from step `start`
    (result None: its exit status and peak RSS stay null if it is killed with the matrix),
    or how it ended; returns every attempt (a trial continued from checkpoints has several:
    its peak RSS is the largest known)."""
    path = tb_dir / "attempts.json"
    attempts = json.loads(path.read_text()) if path.exists() else []
    if result is None:
        attempts.append({"from_step": start, "exit": None, "peak_rss_mib": None})
    else:
        attempts[-1].update(exit=result[0], peak_rss_mib=round(result[1], 1))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(attempts, indent=2))
    tmp.replace(path)
    return attempts


_children: set[subprocess.Popen] = set()  # the trial processes running now
_children_lock = threading.Lock()
_stopping = threading.Event()


def _run_child(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run a trial process, its output appended to `log`; returns its exit status and peak
    RSS in MiB. Refused (-1) once the matrix is stopping."""
    with log.open("a") as fh:
        with _children_lock:
            if _stopping.is_set():
                return -1, 0.0
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            _children.add(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        finally:
            with _children_lock:
                _children.discard(proc)


def stop_children(timeout: float = 15.0) -> None:
    """Stop every trial process (SIGTERM: ours saves a checkpoint, SB3's ends; SIGKILL after
    `timeout`) and start no new one."""
    with _children_lock:
        _stopping.set()
        procs = list(_children)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def _remote_trial(trial: Trial) -> tuple[dict, bytes]:
    """The Ray task: run the trial in a scratch folder on whichever node, return the row and
    the trial folder as a tar archive (nothing assumes a filesystem shared with the driver)."""
    with tempfile.TemporaryDirectory() as tmp:
        row = run_trial(trial, Path(tmp) / trial.name)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(Path(tmp) / trial.name, arcname=trial.name)
        return row, buf.getvalue()


def _local(
    trials: list[Trial], out: Path, workers: int, note: Callable[[str], None]
) -> Iterator[tuple[Trial, dict]]:
    _stopping.clear()  # (an earlier matrix in this process may have been stopped)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_trial, t, out / "tb" / t.name, note): t for t in trials}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:  # Ctrl-C, SIGTERM (see cli), or closed early
            stop_children()  # before the pool waits for its running trials
            raise
        finally:  # the trials not started yet never start
            for future in futures:
                future.cancel()


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, connected to the cluster at `address` or to one started here with `workers`
    CPUs (shut down at the end; an existing connection is used and left as it is)."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'rl-trust[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:  # an existing cluster, or one here with `workers` CPUs
        local = {} if address else {"num_cpus": workers}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _ray(
    trials: list[Trial], out: Path, address: str | None, workers: int
) -> Iterator[tuple[Trial, dict]]:
    with ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1)(_remote_trial)
        pending = {task.remote(t): t for t in trials}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(done[0])
            row, archive = ray.get(done[0])
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                tar.extractall(out / "tb", filter="data")
            yield trial, row


def sb3_identity(trial: Trial) -> str | None:
    """What an SB3 trial runs (algorithm, arguments, env set-up, steps); None for ours.

    SB3 has no KL penalty, so the SB3 side of `ppo` and `ppo-clip` (and `ppo-fixed`) is the
    same clipped PPO: trials with equal identities are one run, not two."""
    if trial.library != "sb3":
        return None
    from rl_trust.benchmark.sb3 import sb3_kwargs

    cfg = trial.config().to_dict()
    return repr((sb3_kwargs(cfg), cfg["run"]["steps"]))


def caveats(trials: list[Trial]) -> dict[tuple[str, str], list[str]]:
    """Per (env, agent) of the SB3 trials: where SB3's run cannot do what ours does
    (sb3.sb3_caveats), for the report."""
    from rl_trust.benchmark.sb3 import sb3_caveats

    out: dict[tuple[str, str], list[str]] = {}
    for t in trials:
        if t.library == "sb3" and (t.env, t.agent) not in out:
            out[(t.env, t.agent)] = sb3_caveats(t.config().to_dict())
    return {k: v for k, v in out.items() if v}


def recorded_config(trial: Trial, out: Path) -> dict | None:
    """The resolved config a complete trial ran with: ours from its run's config.yaml, SB3's
    from the config.yaml its trial folder keeps (None where an older benchmark kept none)."""
    tb = out / "tb" / trial.name
    path = tb / "run" / "config.yaml" if trial.library == "rl-trust" else tb / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def config_change(trial: Trial, out: Path) -> str | None:
    """How the config a complete trial ran with differs from what the presets give it now
    ("kl_target 0.01 → 0.02"), None if it does not (or is not known). For SB3, only what
    reaches SB3 counts (a KL penalty setting does not)."""
    recorded = recorded_config(trial, out)
    if recorded is None:
        return None
    then, now = config.from_dict(recorded).to_dict(), trial.config().to_dict()
    if trial.library == "sb3":
        from rl_trust.benchmark.sb3 import sb3_kwargs

        if (sb3_kwargs(then), then["run"]["steps"]) == (sb3_kwargs(now), now["run"]["steps"]):
            return None
        if recorded["agent_name"] != trial.agent:  # a shared run: what changed for its agent
            now = dataclasses.replace(trial, agent=recorded["agent_name"]).config().to_dict()
    elif then == now:
        return None
    a, b = (
        {k: v for part in ("run", "env", "agent") for k, v in c[part].items()} for c in (then, now)
    )
    diff = [
        f"{k} {a.get(k)} → {b.get(k)}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)
    ]
    return ", ".join(diff) or "the SB3 arguments"


def changed_configs(complete: Iterable[Trial], out: Path) -> dict[Trial, str]:
    """Of the complete trials, those whose recorded config the presets no longer give, with
    what changed (config_change)."""
    return {t: why for t in complete if (why := config_change(t, out))}


def shared_runs(trials: list[Trial], complete: set[Trial]) -> dict[Trial, Trial]:
    """For every SB3 trial that repeats another's run: the trial whose run it shares (a
    complete one where there is one, else the first in order)."""
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        key = sb3_identity(t)
        if key is not None:
            groups.setdefault(key, []).append(t)
    out = {}
    for group in groups.values():
        rep = next((t for t in group if t in complete), group[0])
        out.update({t: rep for t in group if t is not rep})
    return out


def copy_shared(trial: Trial, rep: Trial, row: dict, out: Path) -> dict:
    """`trial`'s row and TensorBoard folder from the run of `rep` (see sb3_identity)."""
    shutil.rmtree(out / "tb" / trial.name, ignore_errors=True)
    if (out / "tb" / rep.name).exists():
        shutil.copytree(out / "tb" / rep.name, out / "tb" / trial.name)
    return {**row, "agent": trial.agent, "same_run_as": rep.name}


def row_path(trial: Trial, out: Path) -> Path:
    """Where a trial's results row is kept: OUT/trials/NAME.json."""
    return out / "trials" / f"{trial.name}.json"


def recorded_rows(trials: list[Trial], out: Path) -> dict[Trial, dict]:
    """The rows already written under OUT/trials (complete or crashed), by trial."""
    paths = {t: row_path(t, out) for t in trials}
    return {t: json.loads(p.read_text()) for t, p in paths.items() if p.exists()}


def reported_rows(trials: list[Trial], out: Path) -> list[dict]:
    """`--report-only`'s rows: each trial's recorded row, or "not run" where there is none
    or its recorded config is not the presets' any more (said on stderr: it reruns)."""
    done = recorded_rows(trials, out)
    changed = changed_configs((t for t, r in done.items() if r["status"] == "ok"), out)
    for t, why in changed.items():
        print(
            f"rl-trust: {t.name} ran with another config ({why}): not reported; "
            "run the benchmark to rerun it",
            file=sys.stderr,
        )
    return [done[t] if t in done and t not in changed else blank_row(t, "not run") for t in trials]


def blank_row(trial: Trial, status: str) -> dict:
    """A results row with the trial's identity and nothing measured yet."""
    return {
        "library": trial.library,
        "agent": trial.agent,
        "env": trial.env,
        "seed": trial.seed,
        "steps": None,
        "final_return": None,
        "wall_time_s": None,
        "fps": None,
        "peak_rss_mib": None,
        "segments": None,
        "status": status,
        "error": "",
    }


def eta_seconds(
    remaining: set[Trial], seconds: dict[tuple[str, str], list[float]], parallel: int
) -> float:
    """Wall time left: each remaining trial at the mean training time of the finished trials
    of its library and env (SB3's take 3-5x ours; a 1M-step env 10x a 100k one), or of all
    finished trials while none of its kind has finished, `parallel` at a time."""
    every = [x for xs in seconds.values() for x in xs]
    if not every:
        return math.nan
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return sum(mean(seconds.get((t.library, t.env)) or every) for t in remaining) / parallel


def _clock(s: float) -> str:
    return "?" if math.isnan(s) else f"{int(s) // 3600}:{int(s) % 3600 // 60:02d}:{int(s) % 60:02d}"


def _reusable_rows(
    trials: list[Trial], out: Path, progress: Callable[[str], None]
) -> dict[Trial, dict]:
    """The complete trials' rows, less those whose config the presets no longer give (said).
    Their rows are deleted before they run again: a rerun cut short has already written its
    new config, and the old row beside it would then read as this config's result."""
    rows = {t: row for t, row in recorded_rows(trials, out).items() if row["status"] == "ok"}
    changed = changed_configs(rows, out)
    if changed:  # a preset changed since they ran: their results are not this matrix's
        progress(
            f"{len(changed)} complete trial(s) ran with a config the presets no longer give and "
            "run again: " + "; ".join(f"{t.name} ({why})" for t, why in changed.items())
        )
        for t in changed:
            row_path(t, out).unlink(missing_ok=True)
    return {t: row for t, row in rows.items() if t not in changed}


def _progress_line(trial: Trial, row: dict, done: int, todo: int, elapsed: float, eta) -> str:
    what = (
        f"return {row['final_return']:.1f}, {row['fps']:.0f} steps/s"
        if row["status"] == "ok"
        else f"CRASHED ({row['error']})"
    )
    return f"[{done}/{todo}] {trial.name}: {what} | elapsed {_clock(elapsed)}, ETA {_clock(eta)}"


def run_matrix(
    trials: list[Trial],
    out: Path,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> list[dict]:
    """Run what is not complete yet; returns every trial's row (complete ones read back)."""
    (out / "trials").mkdir(parents=True, exist_ok=True)
    rows = _reusable_rows(trials, out, progress)
    shared = shared_runs(trials, set(rows))

    def record(trial: Trial, row: dict) -> None:
        rows[trial] = row
        path = row_path(trial, out)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(row, indent=2))
        tmp.replace(path)

    def share(rep: Trial) -> None:  # rep's run is also the run of the trials sharing it
        for t, r in shared.items():
            if r == rep and t not in rows:
                record(t, copy_shared(t, rep, rows[rep], out))

    for rep in set(shared.values()) & set(rows):
        share(rep)
    todo = [t for t in trials if t not in rows and t not in shared]
    progress(
        f"{len(trials)} trials: {len(rows)} complete before, {len(todo)} to run "
        f"({backend}, {workers if backend == 'local' else 'one CPU per'} worker(s))"
        + (f"; {len(shared)} SB3 trials share another's identical run" if shared else "")
    )
    t0, done, seconds = time.monotonic(), 0, {}
    remaining = set(todo)
    runs = (
        _local(todo, out, workers, progress)
        if backend == "local"
        else _ray(todo, out, ray_address, workers)
    )
    try:
        for trial, row in runs:
            done += 1
            remaining.discard(trial)
            record(trial, row)
            share(trial)
            if row["wall_time_s"] is not None:
                seconds.setdefault((trial.library, trial.env), []).append(row["wall_time_s"])
            eta = eta_seconds(remaining, seconds, workers)
            progress(_progress_line(trial, row, done, len(todo), time.monotonic() - t0, eta))
    finally:
        runs.close()
    return [rows[t] for t in trials]
