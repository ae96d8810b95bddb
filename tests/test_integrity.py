"""A checkpoint is right or it is refused, and no input gives a traceback.

Fuzzed checkpoints (bit flips at random offsets, truncations, every state.json field of the
wrong type or out of range) and bad command-line values go through the real CLI: in-process
through `rl_trust.cli.main` for the many cases (an exception escaping it would be the
traceback), in subprocesses for the ones that need a process of their own (locks, signals,
imports, a full disk). Every outcome must be exit 0 with a verified result, or exit 2 with
one line; and no checkpoint saved before may be lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import RL_TRUST, cli, events

from rl_trust import checkpoint
from rl_trust import cli as cli_module
from rl_trust.board import free_port, wait_until_up

TINY = (
    "--set n_steps=64 --set batch_size=32 --set n_epochs=1 --set checkpoint_every=64 --no-progress"
).split()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A CartPole run of 256 steps: checkpoints at steps 128, 192 and 256."""
    run = tmp_path_factory.mktemp("base") / "run"
    res = cli("train", "--steps", "256", "--run-dir", str(run), *TINY)
    assert res.returncode == 0, res.stderr
    return run


@pytest.fixture
def run(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "run", symlinks=True))


def main(capsys, *args: str) -> tuple[int, list[str]]:
    """The CLI in this process: its exit status and its stderr lines."""
    try:
        status = cli_module.main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    return status, capsys.readouterr().err.strip().splitlines()


def refused(outcome: tuple[int, list[str]], *phrases: str) -> None:
    status, err = outcome
    assert status == 2 and len(err) == 1, (status, err)
    for phrase in phrases:
        assert phrase in err[0], err[0]


def one_line(res: subprocess.CompletedProcess, status: int, *phrases: str) -> None:
    assert res.returncode == status, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def digests(run: Path) -> dict[str, str]:
    """Each checkpoint's files, hashed: what must survive every refused command."""
    out = {}
    for path in checkpoint.list_checkpoints(run):
        for f in sorted(path.iterdir()):
            out[f"{path.name}/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def rewrite_state(path: Path, change) -> None:
    """Edit a checkpoint's state.json as a forger would: checksums recomputed to match."""
    record = json.loads((path / checkpoint.STATE).read_text())
    change(record["state"])
    record["state_sha256"] = hashlib.sha256(
        json.dumps(record["state"], sort_keys=True).encode()
    ).hexdigest()
    (path / checkpoint.STATE).write_text(json.dumps(record))


# --- corrupted checkpoints ---------------------------------------------------------------


def test_bit_flips_and_truncations_are_refused_and_lose_nothing(run, capsys):
    rng = np.random.default_rng(0)
    newest, before = checkpoint.list_checkpoints(run)[-1], digests(run)
    for trial in range(40):
        name = (checkpoint.TENSORS, checkpoint.STATE)[trial % 2]
        original = (newest / name).read_bytes()
        data = bytearray(original)
        if trial % 4 < 2:  # one bit flipped at a random offset
            at = int(rng.integers(len(data)))
            data[at] ^= 1 << int(rng.integers(8))
        else:  # truncated at a random length
            data = data[: int(rng.integers(len(data)))]
        (newest / name).write_bytes(bytes(data))
        status, err = main(capsys, "eval", run, "--episodes", "1")
        if status == 0:  # accepted only where the flip changed nothing the state means
            assert name == checkpoint.STATE, err
            assert json.loads(bytes(data)) == json.loads(original)
        else:
            refused((status, err), str(newest), "use --checkpoint 192")
        (newest / name).write_bytes(original)
    assert digests(run) == before


def test_a_corrupt_checkpoint_is_refused_and_the_previous_one_resumes(run):
    newest = checkpoint.list_checkpoints(run)[-1]
    data = bytearray((newest / checkpoint.TENSORS).read_bytes())
    data[len(data) // 2] ^= 0x10  # a byte of the policy or optimizer tensors
    (newest / checkpoint.TENSORS).write_bytes(bytes(data))
    config_before, older = (run / "config.yaml").read_bytes(), digests(run)
    one_line(
        cli("resume", str(run), "--steps", "512", "--no-progress"),
        2,
        "fails its SHA-256 check",
        "use --checkpoint 192",
    )
    one_line(cli("eval", str(run), "--episodes", "1"), 2, "fails its SHA-256 check")
    assert (run / "config.yaml").read_bytes() == config_before  # steps not rewritten
    assert digests(run) == older

    res = cli("resume", str(run), "--checkpoint", "192", "--steps", "320", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "resuming from step_000000000192" in res.stderr and "superseded" in res.stderr
    kept = [p for p in (run / "superseded").rglob(newest.name)]
    assert len(kept) == 1 and (kept[0] / checkpoint.TENSORS).read_bytes() == bytes(data)
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(run)] == [192, 256, 320]
    steps = [e.step for e in events(run).Scalars("kl/forward_mean")]
    assert steps == list(range(64, 321, 64))  # history purged after 192, then continued


def test_a_null_state_is_refused_without_training_or_purging(run):
    newest = checkpoint.list_checkpoints(run)[-1]
    (newest / checkpoint.STATE).write_text("null")
    logged = sorted(p.stat().st_size for p in run.glob("events.out.tfevents.*"))
    one_line(
        cli("resume", str(run), "--steps", "12288", "--no-progress"),
        2,
        "not an rl-trust checkpoint",
        "use --checkpoint 192",
    )
    assert yaml_steps(run) == 256
    assert sorted(p.stat().st_size for p in run.glob("events.out.tfevents.*")) == logged
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(run)] == [128, 192, 256]


def yaml_steps(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["run"]["steps"]


MISSING = object()  # the field deleted
WRONG = [MISSING, None, "x", [], {}, True, 1.5, -5000, 2**64, float("nan")]


def put(state: dict, field: str, value) -> None:
    if value is MISSING:
        del state[field]
    else:
        state[field] = value


@pytest.mark.parametrize("field", list(checkpoint.SCHEMA))
def test_every_state_field_of_a_wrong_type_or_out_of_range(run, capsys, field):
    """Forged state.json fields (checksums recomputed), through eval and then resume: each is
    exit 0 with a state the schema allows, or exit 2 with one line."""
    newest = checkpoint.list_checkpoints(run)[-1]
    original, before = (newest / checkpoint.STATE).read_bytes(), digests(run)
    for value in WRONG:
        rewrite_state(newest, lambda s, v=value: put(s, field, v))
        status, err = main(capsys, "eval", run, "--episodes", "1")
        if status == 0:  # e.g. a best_eval of 1.5, or versions {}
            assert isinstance(value, checkpoint.SCHEMA[field]) and value is not True, value
        else:
            refused((status, err), str(newest))
            refused(main(capsys, "resume", run, "--steps", "320", "--no-progress"), str(newest))
        (newest / checkpoint.STATE).write_bytes(original)
    assert digests(run) == before
    assert yaml_steps(run) == 256


NESTED = {
    "rng.torch": lambda s: s["rng"].__setitem__("torch", "x"),
    "rng.python": lambda s: s["rng"].__setitem__("python", [1]),
    "rng.numpy": lambda s: s["rng"].__setitem__("numpy", []),
    "rng.rollout": lambda s: s["rng"].__setitem__("rollout", {}),
    "agent.beta": lambda s: s["agent"].__setitem__("beta", "x"),
    "agent.beta<0": lambda s: s["agent"].__setitem__("beta", -1.0),
    "agent.grad_steps": lambda s: s["agent"].__setitem__("grad_steps", 1.5),
    "agent.optimizer": lambda s: s["agent"].__setitem__("optimizer", []),
    "episodes.returns": lambda s: s["episodes"].__setitem__("returns", ["x"]),
    "episodes.count": lambda s: s["episodes"].__setitem__("count", -1),
    "normalizer.obs_count": lambda s: s["normalizer"].__setitem__("obs_count", "x"),
    "policy.extra": lambda s: s["policy"].__setitem__("extra", 5),
    "spaces.action": lambda s: s["spaces"].__setitem__("action", "Discrete(3)"),
    "step≠folder": lambda s: s.__setitem__("step", 192),
    "step<0": lambda s: s.__setitem__("step", -5000),
}


@pytest.mark.parametrize("case", list(NESTED))
def test_nested_fields_forged_are_refused_by_resume(run, capsys, case):
    newest = checkpoint.list_checkpoints(run)[-1]
    before = {k: v for k, v in digests(run).items() if not k.startswith(newest.name)}
    rewrite_state(newest, NESTED[case])
    refused(main(capsys, "resume", run, "--steps", "320", "--no-progress"))
    after = digests(run)
    assert all(after[k] == v for k, v in before.items())
    assert yaml_steps(run) == 256


def test_only_step_folders_are_checkpoints_and_symlinks_out_are_refused(
    run, base, tmp_path, capsys
):
    newest = checkpoint.list_checkpoints(run)[-1]
    shutil.copytree(newest, newest.with_name(newest.name + ".bak"))
    shutil.copytree(newest, newest.with_name("step_x"))
    # a step folder that is a symlink out of the run is not a checkpoint
    shutil.copytree(newest, tmp_path / "other" / "step_000000009999")
    (run / "checkpoints" / "step_000000009999").symlink_to(tmp_path / "other" / "step_000000009999")
    assert checkpoint.list_checkpoints(run)[-1] == newest
    assert main(capsys, "eval", run, "--episodes", "1")[0] == 0
    assert json.loads((run / "eval.json").read_text())["checkpoint"] == newest.name
    assert main(capsys, "resume", run, "--steps", "320", "--no-progress")[0] == 0
    assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == 320

    # checkpoints/ itself a symlink into another run: refused, that run untouched
    victim = Path(shutil.copytree(base, tmp_path / "victim"))
    kept = digests(victim)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(victim / "checkpoints")
    refused(
        main(capsys, "resume", run, "--steps", "2048", "--no-progress"),
        "leads outside the run folder",
    )
    refused(main(capsys, "eval", run), "leads outside the run folder")
    assert digests(victim) == kept


# --- one writer, readers beside it, signals -------------------------------------------------


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_one_writer_per_run_and_eval_reads_while_it_trains(run):
    proc = subprocess.Popen(
        [RL_TRUST, "resume", str(run), "--steps", "100000000", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(checkpoint.step_of(p) > 512 for p in checkpoint.list_checkpoints(run)))
        one_line(
            cli("resume", str(run), "--steps", "200000000", "--no-progress"),
            2,
            f"is in use by pid {proc.pid}",
        )
        for _ in range(3):  # checkpoints rotate every 64 steps meanwhile
            res = cli("eval", str(run), "--episodes", "2")
            assert res.returncode == 0, res.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    res = cli(
        "resume",
        str(run),
        "--steps",
        str(checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) + 64),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr  # the lock went with the process


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_evaluation_stops_training_with_a_checkpoint(tmp_path, sig, code):
    """An env without a time limit whose episodes never end: evaluation runs until
    eval_max_steps, as on CliffWalking."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            RL_TRUST,
            "train",
            "--env",
            "rl_trust/Endless-v0",
            "--steps",
            "100000",
            "--run-dir",
            str(run),
            *TINY,
            "--set",
            "eval_every=128",
            "--set",
            "eval_max_steps=100000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: checkpoint.list_checkpoints(run))  # step 64; step 128 then evaluates
    time.sleep(2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)  # (a hang would be a timeout here)
    assert proc.returncode == code and "Traceback" not in err, err
    assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == 128

    res = cli("eval", str(run), "--episodes", "2", "--max-steps", "300")
    assert res.returncode == 0, res.stderr
    assert "cut at 300 steps" in res.stderr
    assert json.loads((run / "eval.json").read_text())["lengths"] == [300, 300]

    proc = subprocess.Popen(
        [RL_TRUST, "eval", str(run), "--episodes", "1", "--max-steps", "100000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)  # (past its imports: a signal then is the CLI's to handle)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code and "Traceback" not in err, err


def test_ctrl_c_before_the_first_update_removes_the_run_folder(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(  # (a first rollout of 16384 steps takes a second or more)
        [RL_TRUST, "train", "--run-dir", str(run), "--set", "n_steps=16384", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (run / "config.yaml").exists())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not run.exists(), err


def test_a_disk_that_fills_while_saving_then_stays_full(run):
    """RLIMIT_FSIZE makes every write past 40 kB fail with EFBIG, as a full disk would."""
    before = digests(run)

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    for _ in range(2):  # the write fails; resume again on the still-full disk
        res = subprocess.run(
            [RL_TRUST, "resume", str(run), "--steps", "1024", "--no-progress"],
            capture_output=True,
            text=True,
            preexec_fn=small_disk,
            timeout=300,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        one_line(res, 2, "cannot write a checkpoint at step 320", "earlier checkpoints are intact")
    assert digests(run) == before
    assert not list((run / "checkpoints").glob(".tmp-*"))


# --- the trust boundary --------------------------------------------------------------------


def test_board_on_a_non_loopback_host_warns_and_prints_a_url_that_opens(base):
    port = free_port()
    proc = subprocess.Popen(
        [RL_TRUST, "board", str(base.parent), "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/"
        wait_until_up(url)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "reachable from the network" in err, err


def pythonpath(folder: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    }


MODULE = """
import pathlib
import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv
pathlib.Path({marker!r}).write_text("imported")

class NoRender(CartPoleEnv):
    def __init__(self):
        super().__init__()

gym.register("NoRender-v0", entry_point=NoRender, max_episode_steps=50)
"""


def test_a_run_folder_names_a_module_imported_only_with_allow_import(tmp_path):
    (tmp_path / "mods").mkdir()
    marker = tmp_path / "imported"
    (tmp_path / "mods" / "userenv.py").write_text(MODULE.format(marker=str(marker)))
    env = pythonpath(tmp_path / "mods")
    run = tmp_path / "run"
    res = cli(
        "train",
        "--env",
        "userenv:NoRender-v0",
        "--steps",
        "128",
        "--run-dir",
        str(run),
        *TINY,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    marker.unlink()

    for command in ("eval", "resume"):
        one_line(
            cli(
                command,
                str(run),
                "--steps" if command == "resume" else "--episodes",
                "256" if command == "resume" else "1",
                env=env,
            ),
            2,
            "importing module 'userenv' runs its code",
            "--allow-import",
        )
    assert not marker.exists()
    res = cli("eval", str(run), "--episodes", "1", "--allow-import", env=env)
    assert res.returncode == 0 and marker.exists(), res.stderr
    # a custom env whose constructor takes no render_mode: evaluated, but not filmed
    one_line(cli("eval", str(run), "--video", "--allow-import", env=env), 2, "cannot render")


# --- bad values on the command line ----------------------------------------------------------

BROKEN_MODULES = {"raises": "raise RuntimeError('boom at import')\n", "syntax": "def f(:\n"}


@pytest.fixture
def modules(tmp_path, monkeypatch) -> Path:
    for name, text in BROKEN_MODULES.items():
        (tmp_path / f"broken_{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


BAD = [
    (["train", "--steps", "inf"], "--steps 'inf'"),
    (["train", "--steps", "1e400"], "--steps '1e400'"),
    (["train", "--set", "n_steps=1e400"], "n_steps='1e400' is not valid"),
    (["train", "--seed", "12345678901234567890"], "seed=12345678901234567890 is out of range"),
    (["train", "--seed", "-1"], "seed=-1 is out of range"),
    (["train", "--set", "learning_rate=nan"], "learning_rate='nan' is not valid"),
    (["train", "--set", "ent_coef=inf"], "ent_coef='inf' is not valid"),
    (["train", "--set", "max_grad_norm=.inf"], "max_grad_norm=inf is not valid"),
    (["train", "--set", "kl_factor=-.inf"], "kl_factor=-inf is not valid"),
    (["train", "--set", "n_steps=1", "--set", "batch_size=1"], "cannot normalize advantages"),
    (["train", "--set", "batch_size=1"], "batch_size=1 cannot normalize"),
    (["train", "--set", "n_steps=100000000"], "is too large"),
    (["train", "--set", "n_envs=100000"], "n_envs=100000 is out of range"),
    (["train", "--set", "net_arch=[64, 0]"], "net_arch=(64, 0) is out of range"),
    (["train", "--set", "env_id=Acrobot-v1"], "contradicts --env CartPole-v1"),
    (["train", "--agent", "ppo", "--set", "algo=trpo"], "contradicts the agent 'ppo'"),
    (["train", "--set", "n_steps=64", "--set", "n_steps=128"], "--set n_steps is given twice"),
    (["train", "--env", "broken_raises:X-v0"], "raised RuntimeError: boom at import"),
    (["train", "--env", "broken_syntax:X-v0"], "raised SyntaxError"),
    (["train", "--env", "Nope-v0"], "unknown env id 'Nope-v0'"),
    (["benchmark", "--envs", "Nope-v0", "--out", "{tmp}/b"], "unknown env id 'Nope-v0'"),
    (["benchmark", "--envs", ",", "--out", "{tmp}/b"], "the matrix is empty"),
    (["benchmark", "--agents", " ", "--out", "{tmp}/b"], "the matrix is empty"),
    (["benchmark", "--out", "{tmp}/file"], "is a file"),
    (["benchmark", "--report-only", "--out", "{tmp}/missing"], "does not exist"),
    (["plot", "{run}", "--out", "{tmp}/missing/p.png"], "does not exist"),
    (["eval", "{run}", "--seed", "99999999999999999999"], "--seed 99999999999999999999"),
    (["eval", "{run}", "--max-steps", "0"], "--max-steps 0"),
    (["resume", "{run}", "--checkpoint", "7", "--steps", "512"], "no checkpoint at step 7"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_exit_2_with_one_line(base, tmp_path, capsys, modules, args, message):
    (tmp_path / "file").write_text("")
    args = [a.format(tmp=tmp_path, run=base) for a in args]
    if args[0] == "train":
        args += ["--run-dir", str(tmp_path / "new"), "--no-progress"]
    refused(main(capsys, *args), message)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["file", "/dev/null", "/proc/self/runs"])
def test_run_folder_path_errors(tmp_path, capsys, where):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" if where == "file" else Path(where)
    refused(main(capsys, "train", "--run-dir", path, "--no-progress"), str(path))
    refused(main(capsys, "train", "--runs-root", path, "--no-progress"), str(path))


def test_eval_refuses_a_checkpoint_of_another_env_or_network(run, base, tmp_path, capsys):
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["agent"]["net_arch"] = [32]  # edited after training
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused(main(capsys, "eval", run, "--episodes", "1"), "does not fit the run's network")
    cfg["agent"]["net_arch"], cfg["env"]["env_id"] = [64, 64], "Acrobot-v1"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused(main(capsys, "eval", run, "--episodes", "1"), "saved for observation space")


def test_eval_of_a_run_whose_env_kwargs_hold_a_render_mode(tmp_path, capsys):
    run = tmp_path / "run"
    res = cli(
        "train",
        "--steps",
        "64",
        "--run-dir",
        str(run),
        *TINY,
        "--set",
        "env_kwargs={render_mode: rgb_array}",
    )
    assert res.returncode == 0, res.stderr
    assert main(capsys, "eval", run, "--episodes", "1")[0] == 0


def test_divergence_before_any_checkpoint_says_none_was_kept(tmp_path):
    res = cli(
        "train",
        "--env",
        "rl_trust/NaNAfter-v0",
        "--steps",
        "4096",
        "--run-dir",
        str(tmp_path / "run"),
        *TINY,
        "--set",
        "env_kwargs={nan_after: 5}",
    )
    one_line(res, 3, "training diverged", "no checkpoint had been written yet")


def test_a_benchmark_of_a_module_env_runs_both_libraries(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "benchenv.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('BenchCart-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv',"
        " max_episode_steps=100)\n"
    )
    out = tmp_path / "bench"
    res = cli(
        "benchmark",
        "--agents",
        "ppo-clip",
        "--envs",
        "benchenv:BenchCart-v0",
        "--seeds",
        "1",
        "--steps",
        "512",
        "--set",
        "n_steps=256",
        "--out",
        str(out),
        env=pythonpath(tmp_path / "mods"),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    names = [p.name for p in out.rglob("*")]
    assert names and not [n for n in names if ":" in n], names
    rows = (out / "results.csv").read_text()
    assert rows.count(",ok,") == 2, rows  # ours and SB3's
