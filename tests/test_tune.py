"""`rl-trust tune`: Optuna studies over the trainer, through the CLI as a user runs them.

Every study is tiny (CartPole, n_steps 128, a few thousand steps): what is checked is the
study's bookkeeping (pruning, failures with their reasons, kill -9 and continue, workers
sharing one storage, best.yaml), not what the tuning finds.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import RL_TRUST, cli

optuna = pytest.importorskip("optuna")

SPACE = {"learning_rate": {"categorical": [3e-3, 1e-6]}, "kl_target": {"loguniform": [0.003, 0.05]}}


def tiny(tmp_path: Path, *extra: str, space: dict | None = SPACE, steps: int = 2048) -> list[str]:
    """A tune command line: CartPole, n_steps 128, the space above."""
    args = [
        "tune",
        "--env",
        "CartPole-v1",
        "--steps",
        str(steps),
        "--set",
        "n_steps=128",
        "--out",
        str(tmp_path / "out"),
        "--sampler-seed",
        "0",
        *extra,
    ]
    if space is not None:
        path = tmp_path / "space.yaml"
        path.write_text(yaml.safe_dump(space))
        args += ["--space", str(path)]
    return args


def load(out: Path, storage: str | None = None, name: str = "ppo-CartPole-v1"):
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{out}/study.db")


def by_state(study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in study.get_trials():
        if not t.system_attrs.get("surplus"):
            out.setdefault(t.state.name, []).append(t)
    return out


def trial_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("trial ")]


def test_a_study_prunes_writes_its_outputs_and_never_reruns_a_finished_trial(tmp_path):
    args = tiny(tmp_path, "--trials", "4", "--pruner", "median")
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    assert res.stdout.strip() == str(out / "report.md")
    states = by_state(load(out))
    assert len(states.get("PRUNED", [])) >= 1, res.stderr
    assert sum(map(len, states.values())) == 4
    lines = trial_lines(res.stderr)
    assert len(lines) == 4 and all("| best " in line and "ETA" in line for line in lines)
    assert any(" pruned: at step " in line for line in lines)
    for t in states["COMPLETE"] + states["PRUNED"]:  # every trial is a run folder
        run = out / "trials" / f"t{t.number:04d}-s0"
        assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
        assert t.user_attrs["runs"] == [run.name]
        assert sorted(t.intermediate_values) == sorted(set(t.intermediate_values))
    report = (out / "report.md").read_text()
    assert "## Best" in report and "## Pruned" in report
    for png in ("history.png", "return-vs-kl-target.png"):
        assert f"]({png})" in report and (out / png).stat().st_size > 1000

    # the same command again: the study is complete, nothing runs
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 trials finished before" in again.stderr and not trial_lines(again.stderr)
    assert len(load(out).get_trials()) == 4
    other = [a if a != "2048" else "1024" for a in args]  # the same study, another budget
    refused = cli(*other)
    assert refused.returncode == 2 and "was made with another steps" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and len(load(out).get_trials()) == 4

    # best.yaml is an agent preset that train takes, with the best trial's values
    best = max(states["COMPLETE"], key=lambda t: t.value)
    preset = yaml.safe_load((out / "best.yaml").read_text())
    assert preset["learning_rate"] == best.params["learning_rate"]
    assert preset["kl_target"] == best.params["kl_target"] and preset["n_steps"] == 128
    run = tmp_path / "best-run"
    res = cli(
        "train",
        "--agent",
        str(out / "best.yaml"),
        "--env",
        "CartPole-v1",
        "--steps",
        "256",
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    trained = yaml.safe_load((run / "config.yaml").read_text())["agent"]
    assert trained["learning_rate"] == best.params["learning_rate"]
    assert trained["kl_target"] == best.params["kl_target"] and trained["n_steps"] == 128


def test_diverged_trials_fail_with_their_reason_and_the_study_goes_on(tmp_path):
    args = [
        "tune",
        "--env",
        "rl_trust/NaNAfter-v0",
        "--steps",
        "1024",
        "--trials",
        "2",
        "--set",
        "n_steps=128",
        "--set",
        "env_kwargs={nan_after: 300}",
        "--space",
        str(tmp_path / "space.yaml"),
        "--out",
        str(tmp_path / "out"),
    ]
    (tmp_path / "space.yaml").write_text("learning_rate: {loguniform: [1.0e-4, 1.0e-3]}\n")
    res = cli(*args)
    assert res.returncode == 1, res.stderr  # no trial completed
    study = load(tmp_path / "out", name="ppo-rl_trust_NaNAfter-v0")
    failed = by_state(study)["FAIL"]
    assert [t.number for t in failed] == [0, 1]  # the second ran after the first diverged
    for t in failed:
        reason = t.user_attrs["fail_reason"]  # (the env's NaN, named as the env's output)
        assert reason.startswith("diverged: env rl_trust/NaNAfter-v0 returned a non-finite")
        assert "diverged.json" in t.user_attrs["fail_reason"]
    assert len([line for line in trial_lines(res.stderr) if "fail: diverged" in line]) == 2
    assert "## Failed" in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "best.yaml").exists()


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_study_killed_mid_trial_continues_and_the_trial_resumes_from_its_checkpoint(tmp_path):
    args = tiny(tmp_path, "--trials", "2", "--pruner", "none", "--heartbeat", "2", steps=4096)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [RL_TRUST, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    run = out / "trials" / "t0000-s0"
    try:
        _wait_for(lambda: glob.glob(str(run / "checkpoints" / "step_*")), proc, "a checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = [int(p.rsplit("_", 1)[1]) for p in glob.glob(str(run / "checkpoints/step_*"))]
    assert load(out).trials[0].state == optuna.trial.TrialState.RUNNING  # nobody told it

    res = cli(*args)  # the same command: trial 0 goes stale, is retried and resumes
    assert res.returncode == 0, res.stderr
    study = load(out)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[0].state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == trials[0].params
    assert retry[0].user_attrs["resumed_s0"] in killed_at  # from its own checkpoint
    assert retry[0].user_attrs["runs"] == ["t0000-s0"]
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["steps"] >= 4096
    assert [s for s, ts in by_state(study).items() for _ in ts].count("COMPLETE") == 2
    assert f"trial {retry[0].number} (retry of 0) complete" in res.stderr


def test_a_study_interrupted_with_sigterm_queues_its_trial_again(tmp_path):
    args = tiny(tmp_path, "--trials", "1", "--pruner", "none", steps=4096)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [RL_TRUST, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    run = out / "trials" / "t0000-s0"
    try:
        _wait_for(lambda: glob.glob(str(run / "checkpoints" / "step_*")), proc, "a checkpoint")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "run the same command again to continue" in stderr
    trial = load(out).trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["interrupted"]
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "1 interrupted queued again" in res.stderr
    trials = load(out).get_trials()
    assert len(trials) == 2 and trials[1].system_attrs["resumes"] == 0
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert trials[1].user_attrs["resumed_s0"] > 0


def _two_workers(
    tmp_path: Path, storage: str | None, backend: tuple[str, ...] = (), env: dict | None = None
):
    extra = ("--storage", storage) if storage else ()
    args = tiny(tmp_path, "--trials", "4", "--pruner", "none", *extra, steps=1024)
    res = cli(*args, "--workers", "2", *backend, env=env)
    assert res.returncode == 0, res.stderr
    study = load(tmp_path / "out", storage)
    states = by_state(study)
    assert list(states) == ["COMPLETE"] and len(states["COMPLETE"]) == 4
    workers = {t.user_attrs["worker"] for t in states["COMPLETE"]}
    assert len(workers) == 2, workers  # both processes ran trials of the one study
    assert len(trial_lines(res.stderr)) == 4
    assert (tmp_path / "out" / "best.yaml").is_file()


def test_two_workers_share_one_sqlite_file(tmp_path):
    _two_workers(tmp_path, None)
    for i in (0, 1):
        assert (tmp_path / "out" / "workers" / f"worker{i}.log").is_file()


@pytest.mark.slow  # (starting Ray takes most of a minute here)
def test_two_ray_workers_share_one_sqlite_file(tmp_path):
    pytest.importorskip("ray")
    _two_workers(tmp_path, None, ("--backend", "ray"), {"RAY_AUTH_MODE": "disabled"})


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def test_two_workers_share_a_postgresql_study(tmp_path):
    pg = _postgres_bin()
    if pg is None:
        pytest.skip("PostgreSQL's server binaries are absent (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="rl-trust-pg-"))  # (the server's user must reach it)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the package's postgres user runs the server
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    os.chmod(root, 0o755)
    data, port = root / "data", _free_port()

    def run(*cmd):
        return subprocess.run(
            [*as_user, *map(str, cmd)], check=True, capture_output=True, text=True, timeout=120
        )

    run(pg / "initdb", "-D", data, "-A", "trust", "-U", "tune")
    run(
        pg / "pg_ctl",
        "-D",
        data,
        "-l",
        root / "server.log",
        "-w",
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
        "start",
    )
    try:
        _two_workers(tmp_path, f"postgresql://tune@127.0.0.1:{port}/postgres")
    finally:
        run(pg / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD = {
    "unknown key": ({"learning_rat": {"loguniform": [1e-4, 1e-3]}}, (), "unknown key"),
    "bad distribution": ({"learning_rate": {"normal": [0, 1]}}, (), "is not a distribution"),
    "log of zero": ({"ent_coef": {"loguniform": [0, 0.1]}}, (), "needs low > 0"),
    "out of range": ({"gamma": {"uniform": [0.9, 1.5]}}, (), "out of range"),
    "int of a float key": ({"learning_rate": {"int": [1, 3]}}, (), "not an int"),
    "float of an int key": ({"n_epochs": {"uniform": [1, 3]}}, (), "use int or categorical"),
    "bad choice": ({"kl_controller": {"categorical": ["pid", "nope"]}}, (), "kl_controller"),
    "trpo key for ppo": ({"cg_damping": {"uniform": [0.01, 0.1]}}, (), "does not apply"),
    "searched and fixed": (SPACE, ("--set", "learning_rate=0.001"), "both searched"),
    "steps in --set": (None, ("--set", "steps=100"), "tune sets it"),
    "bad storage": (None, ("--storage", "not a url"), "not a SQLAlchemy URL"),
    "no trials": (None, ("--trials", "0"), "--trials 0"),
    "unknown agent": (None, ("--agent", "nope"), "unknown agent"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    space, extra, words = BAD[case]
    if space is not None:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
        extra = (*extra, "--space", str(tmp_path / "space.yaml"))
    res = cli("tune", "--steps", "512", "--out", str(tmp_path / "out"), *extra)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr
    assert res.stderr.startswith("rl-trust: error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_tune_from_python_over_two_seeds_with_an_evaluation(tmp_path):
    import json

    import rl_trust

    lines: list[str] = []
    out = tmp_path / "out"
    result = rl_trust.tune(
        env="CartPole-v1",
        trials=1,
        steps=512,
        seeds=2,
        eval_episodes=2,
        space=SPACE,
        overrides={"n_steps": 128},
        out=out,
        progress=lines.append,
    )
    assert result.counts["complete"] == 1 and result.best_yaml == out / "best.yaml"
    assert result.best_params.keys() == SPACE.keys() and len(lines) == 3
    evals = [json.loads((out / "trials" / f"t0000-s{k}" / "eval.json").read_text()) for k in (0, 1)]
    assert all(e["episodes"] == 2 and e["deterministic"] for e in evals)
    assert result.best_value == pytest.approx(sum(e["mean_return"] for e in evals) / 2)
    trial = result.study.trials[0]
    assert max(trial.intermediate_values) > 512  # seed 1 reports after seed 0's steps
    assert rl_trust.tune.default_space is not None  # (the module, callable)


def test_a_trials_return_is_the_recent_episodes_not_the_last_hundred():
    # A trial's value and what the pruner sees: the episodes that ended in the last window
    # of steps. rollout/ep_rew_mean's 100 episodes would mix early and late ones.
    from types import SimpleNamespace

    from rl_trust.tune import RecentReturn

    collector = SimpleNamespace(episodes=0, episode_returns=[])
    recent = RecentReturn(window=2000)
    assert recent(1000, collector) is None  # no episode yet
    collector.episodes, collector.episode_returns = 90, [10.0] * 90
    assert recent(2000, collector) == 10.0
    collector.episodes = 100  # 10 episodes of 200 in the next 2000 steps
    collector.episode_returns = [10.0] * 90 + [200.0] * 10
    assert recent(4000, collector) == 200.0  # (the last 100: 29.0)
    collector.episodes = 101
    collector.episode_returns = [10.0] * 89 + [200.0] * 11
    assert recent(6000, collector) == 200.0  # one episode in the window: that one
    assert recent(8000, collector) == 200.0  # none in the window: still the last one
    assert recent.value == 200.0
