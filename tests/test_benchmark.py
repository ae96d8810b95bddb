"""`rl-trust benchmark` and `rl-trust plot` as a user runs them, and the SB3 adapter."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import RL_TRUST, cli, events

from rl_trust import config
from rl_trust.benchmark import matrix
from rl_trust.benchmark.sb3 import sb3_caveats, sb3_kwargs

TINY = (
    "--agents ppo-clip,trpo --envs CartPole-v1 --seeds 2 --steps 2048 --set n_steps=512 --workers 2"
).split()


@pytest.mark.parametrize("agent", ["ppo-clip", "trpo"])
def test_the_adapter_maps_every_shared_hyperparameter(agent):
    """Every constructor argument SB3 shares with our config is either passed through with
    our value, or dropped only where both defaults agree; overrides reach SB3."""
    if agent == "trpo":
        from sb3_contrib import TRPO as Algo
    else:
        from stable_baselines3 import PPO as Algo
    cfg = config.load(agent, "CartPole-v1", {})
    ours = dataclasses.asdict(cfg.agent)
    signature = inspect.signature(Algo.__init__).parameters
    # SB3 takes its policy class apart from the kwargs (a network of your own is a caveat),
    # and the benchmark runs SB3 on the CPU, where our manual engine runs
    shared = set(signature) & set(ours) - {"policy", "device"}
    assert {"n_steps", "batch_size", "gamma", "gae_lambda", "target_kl"} <= shared
    _, kwargs, _ = sb3_kwargs(cfg.to_dict())
    for key in shared:
        if key in kwargs:
            assert kwargs[key] == ours[key], key
        else:
            assert signature[key].default == ours[key], f"{key} dropped but defaults differ"
    changed = config.load(
        agent,
        "Pendulum-v1",
        config.parse_overrides(
            (
                "n_steps=256 gamma=0.9 gae_lambda=0.8 batch_size=32 "
                "learning_rate=1e-3 normalize_obs=true n_envs=2"
            ).split()
        ),
    )
    name, kwargs, env = sb3_kwargs(changed.to_dict())
    assert name == ("TRPO" if agent == "trpo" else "PPO")
    assert (kwargs["n_steps"], kwargs["gamma"], kwargs["gae_lambda"]) == (256, 0.9, 0.8)
    assert (kwargs["batch_size"], kwargs["learning_rate"]) == (32, 1e-3)
    assert env["n_envs"] == 2 and env["normalize"]["norm_obs"] is True
    assert kwargs["device"] == "cpu"
    assert not [c for c in sb3_caveats(cfg.to_dict()) if c.startswith(("policy=", "device="))]
    own = config.load(
        agent, "CartPole-v1", {"policy": "mynet:factory", "device": "cuda", "precision": "bfloat16"}
    )
    assert [c.split(":")[0] for c in sb3_caveats(own.to_dict())][:3] == [
        "policy=mynet",
        "device=cuda",
        "precision=bfloat16",
    ]


def test_the_adapter_gives_sb3_contrib_trpo_the_same_trust_region_on_box_actions():
    from rl_trust.benchmark.sb3 import kl_dims

    cfg = config.load("trpo", "Hopper-v5", {}, None, 0)  # the preset: rl-zoo's, in our terms
    assert (cfg.agent.target_kl, cfg.agent.cg_damping) == (0.03, 0.3)
    _, kwargs, _ = sb3_kwargs(cfg.to_dict())
    assert kwargs["target_kl"] == pytest.approx(0.01) and kwargs["cg_damping"] == pytest.approx(0.1)
    assert any(
        "averages the KL over the 3 action dimensions" in c for c in sb3_caveats(cfg.to_dict())
    )
    assert [kl_dims({"env_id": e}) for e in ("HalfCheetah-v5", "Pendulum-v1", "CartPole-v1")] == [
        6,
        1,
        1,
    ]
    ppo = sb3_kwargs(config.load("ppo-clip", "Hopper-v5", {}, None, 0).to_dict())[1]
    assert ppo["target_kl"] is None  # SB3 PPO's early stop estimates the summed KL: as ours


# rl-baselines3-zoo's hyperparams/ppo.yml, Hopper-v3 (the zoo's tuned MuJoCo PPO), as SB3 takes it
ZOO_HOPPER = dict(
    n_steps=512,
    batch_size=32,
    gamma=0.999,
    learning_rate=9.80828e-05,
    ent_coef=0.00229519,
    clip_range=0.2,
    n_epochs=5,
    gae_lambda=0.99,
    max_grad_norm=0.7,
    vf_coef=0.835671,
)


def test_the_zoo_presets_give_ours_and_sb3_the_zoos_tuned_hyperparameters():
    import torch

    from rl_trust.benchmark.matrix import Trial, sb3_identity

    clip, kl = (config.load(a, "Hopper-v5", {}, None, 0) for a in ("ppo-clip-zoo", "ppo-zoo"))
    name, kwargs, env = sb3_kwargs(clip.to_dict())
    assert name == "PPO" and {k: kwargs[k] for k in ZOO_HOPPER} == ZOO_HOPPER
    pk = kwargs["policy_kwargs"]
    assert pk["net_arch"] == {"pi": [256, 256], "vf": [256, 256]}
    assert (pk["activation_fn"], pk["log_std_init"], pk["ortho_init"]) == (torch.nn.ReLU, -2, False)
    assert env["n_envs"] == 1 and env["normalize"]["norm_reward"]
    assert env["normalize"]["gamma"] == 0.999  # the zoo gives VecNormalize the agent's γ
    # the same tuning under the adaptive KL penalty; SB3 cannot tell the two apart
    assert (clip.agent.clip, kl.agent.clip, kl.agent.kl_penalty) == (True, False, "adaptive")
    assert dataclasses.replace(kl.agent, clip=True, kl_penalty="off") == clip.agent
    same = [sb3_identity(Trial("sb3", a, "Hopper-v5", 0)) for a in ("ppo-clip-zoo", "ppo-zoo")]
    assert same[0] == same[1] is not None
    # the untuned preset is not touched by the zoo section
    assert config.load("ppo-clip", "Hopper-v5", {}, None, 0).agent.net_arch == (64, 64)


# rl-baselines3-zoo's hyperparams/trpo.yml for the MuJoCo v4 envs (sb3-contrib's TRPO, its KL
# averaged over the action dimensions), as sb3-contrib takes it; HalfCheetah's target_kl 0.04
ZOO_TRPO = dict(
    n_steps=1024,
    batch_size=128,
    gamma=0.99,
    gae_lambda=0.95,
    cg_max_steps=25,
    cg_damping=0.1,
    n_critic_updates=20,
    learning_rate=1e-3,
    sub_sampling_factor=1,
    line_search_shrinking_factor=0.8,
    line_search_max_iter=10,
    normalize_advantage=True,
)


@pytest.mark.parametrize(
    "env_id, dims, zoo_kl",
    [("Hopper-v5", 3, 0.01), ("HalfCheetah-v5", 6, 0.04), ("Walker2d-v5", 6, 0.01)],
)
def test_trpo_zoo_gives_ours_and_sb3_contrib_the_zoos_trpo_in_each_ones_kl_units(
    env_id, dims, zoo_kl
):
    import torch

    cfg = config.load("trpo-zoo", env_id, {}, None, 0)
    a, e = cfg.agent, cfg.env
    # ours: the zoo's δ and damping times the action dimensions (our KL sums over them)
    assert (a.target_kl, a.cg_damping) == pytest.approx((zoo_kl * dims, 0.1 * dims))
    assert (a.n_steps, a.batch_size, a.cg_max_steps, a.n_critic_updates) == (1024, 128, 25, 20)
    assert (a.learning_rate, a.gamma, a.gae_lambda, a.lr_schedule) == (1e-3, 0.99, 0.95, "constant")
    assert (a.net_arch, a.activation, a.log_std_init, a.ortho_init) == ((64, 64), "tanh", 0, True)
    assert (e.n_envs, e.normalize_obs, e.normalize_reward, cfg.run.steps) == (2, True, True, 10**6)
    # sb3-contrib: the zoo's numbers as the zoo writes them
    name, kwargs, env = sb3_kwargs(cfg.to_dict())
    assert name == "TRPO"
    assert {k: kwargs[k] for k in ZOO_TRPO} == pytest.approx(ZOO_TRPO)
    assert kwargs["target_kl"] == pytest.approx(zoo_kl) and kwargs["seed"] == 0
    pk = kwargs["policy_kwargs"]
    assert pk["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert (pk["activation_fn"], pk["log_std_init"], pk["ortho_init"]) == (torch.nn.Tanh, 0, True)
    assert env["n_envs"] == 2 and env["normalize"] == {
        "norm_obs": True,
        "norm_reward": True,
        "clip_obs": 10.0,
        "clip_reward": 10.0,
        "gamma": 0.99,
    }
    # what sb3-contrib cannot do as ours is said: the KL's direction; the units are translated
    said = sb3_caveats(cfg.to_dict())
    assert any(c.startswith("kl_direction=forward") for c in said)
    assert any(
        f"over the {dims} action dimensions: it is given target_kl={zoo_kl:g}" in c for c in said
    )
    # the untuned trpo keeps its own settings
    plain = config.load("trpo", env_id, {}, None, 0)
    assert (plain.env.n_envs, plain.agent.n_steps, plain.agent.cg_max_steps) == (1, 2048, 15)


def test_the_report_statistics_on_hand_counted_seeds():
    from rl_trust.benchmark.report import bootstrap_ci, iqm, prob_improvement

    # Hopper-v5 ppo-clip at 1M (benchmarks/ppo-hopper-1m): 6 of the 25 pairs favour ours
    ours, sb3 = [927.0, 2632.0, 1937.0, 1979.0, 2872.0], [2739.0, 2314.0, 2623.0, 3100.0, 2706.0]
    assert prob_improvement(ours, sb3) == pytest.approx(6 / 25)
    assert prob_improvement(ours, sb3) + prob_improvement(sb3, ours) == pytest.approx(1)
    assert prob_improvement([1.0, 1.0], [1.0]) == 0.5 and prob_improvement([2.0], [1.0]) == 1
    assert iqm(ours) == pytest.approx((1937 + 1979 + 2632) / 3)  # the middle 3 of 5
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # the middle 4 of 8: 3, 4, 5, 6
    lo, hi = bootstrap_ci(ours, sb3, stat=prob_improvement)
    assert 0 <= lo < 6 / 25 < hi <= 1
    assert math.isnan(bootstrap_ci([1.0], sb3, stat=prob_improvement)[0])


def test_eta_weighs_each_remaining_trial_by_its_kind():
    from rl_trust.benchmark.matrix import Trial, eta_seconds

    ours, sb3 = Trial("rl-trust", "ppo", "Hopper-v5", 1), Trial("sb3", "ppo", "Hopper-v5", 1)
    other = Trial("sb3", "ppo", "CartPole-v1", 0)
    seconds = {("rl-trust", "Hopper-v5"): [200.0, 220.0], ("sb3", "Hopper-v5"): [900.0]}
    assert eta_seconds(set(), seconds, 2) == 0
    assert eta_seconds({ours, sb3}, seconds, 1) == 210 + 900
    assert eta_seconds({ours, sb3}, seconds, 2) == (210 + 900) / 2
    assert eta_seconds({other}, seconds, 1) == pytest.approx((200 + 220 + 900) / 3)  # no kin yet
    assert math.isnan(eta_seconds({ours}, {}, 1))  # nothing finished: unknown


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "local"
    res = cli("benchmark", *TINY, "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out / "report.md")
    return out


def rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_tiny_benchmark_writes_results_report_plots_and_events(local):
    table = rows(local)
    assert len(table) == 8 and {r["status"] for r in table} == {"ok"}
    assert {(r["library"], r["agent"]) for r in table} == {
        (lib, a) for lib in ("rl-trust", "sb3") for a in ("ppo-clip", "trpo")
    }
    for r in table:
        assert int(r["steps"]) == 2048 and float(r["fps"]) > 0
        assert 8 < float(r["final_return"]) <= 500  # CartPole episodes last 8 to 500 steps
        assert float(r["peak_rss_mib"]) > 50 and r["segments"] == "1"
    report = (local / "report.md").read_text()
    rss = {(r["library"], r["agent"]): float(r["peak_rss_mib"]) for r in table}  # (seed 1's)
    line = next(x for x in report.splitlines() if x.startswith("| CartPole-v1 | ppo-clip |"))
    ours, theirs = (int(v) for v in line.split("|")[-3].split("/"))
    assert ours >= rss[("rl-trust", "ppo-clip")] - 1 and theirs >= rss[("sb3", "ppo-clip")] - 1
    assert "- CartPole-v1 trpo: kl_direction=forward: sb3-contrib TRPO bounds" in report
    assert "- CartPole-v1 ppo-clip:" not in report  # a faithful copy has no caveat
    assert "| CartPole-v1 | ppo-clip |" in report and "| CartPole-v1 | trpo |" in report
    assert "2 / 2" in report and "rl-trust benchmark --agents ppo-clip,trpo" in report
    assert "| P(rl-trust > SB3) |" in report
    for png in ("CartPole-v1-return.png", "CartPole-v1-kl.png", "overview.png"):
        assert f"]({png})" in report
        data = (local / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    ours = events(local / "tb" / "rl-trust-trpo-CartPole-v1-s0" / "run").Tags()["scalars"]
    theirs = events(local / "tb" / "sb3-ppo-clip-CartPole-v1-s1" / "run").Tags()["scalars"]
    assert {"rollout/ep_rew_mean", "kl/forward_mean", "trpo/accepted"} <= set(ours)
    assert {"rollout/ep_rew_mean", "train/approx_kl", "train/clip_fraction"} <= set(theirs)


def test_each_trial_keeps_its_plotted_curves_without_the_event_files(local, tmp_path):
    from rl_trust.benchmark.report import read_curve

    for trial in ("rl-trust-trpo-CartPole-v1-s0", "sb3-ppo-clip-CartPole-v1-s1"):
        run = local / "tb" / trial / "run"
        bare = tmp_path / trial
        bare.mkdir()
        shutil.copy(run / "curves.csv", bare)  # no event files beside it
        for tag in ("rollout/ep_rew_mean", "kl/forward_mean", "train/approx_kl"):
            from_events, from_csv = read_curve(run, tag), read_curve(bare, tag)
            assert (from_events is None) == (from_csv is None), tag
            if from_events is not None:
                np.testing.assert_array_equal(from_csv[0], from_events[0])
                np.testing.assert_allclose(from_csv[1], from_events[1], rtol=1e-7)
    assert read_curve(tmp_path / "rl-trust-trpo-CartPole-v1-s0", "kl/forward_mean") is not None
    assert read_curve(tmp_path / "no-such-run", "kl/forward_mean") is None  # a plot skips it


def test_a_rerun_skips_finished_trials(local):
    before = {p.name: p.stat().st_mtime_ns for p in (local / "trials").iterdir()}
    res = cli("benchmark", *TINY, "--out", str(local))
    assert res.returncode == 0, res.stderr
    assert "8 trials: 8 complete before, 0 to run" in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (local / "trials").iterdir()} == before


def test_report_only_summarizes_a_partial_matrix_without_running(local, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(local, out)
    for lib in ("rl-trust", "sb3"):  # as if the matrix had stopped before trpo's seed 1
        (out / "trials" / f"{lib}-trpo-CartPole-v1-s1.json").unlink()
    res = cli("benchmark", *TINY, "--out", str(out), "--report-only")
    assert res.returncode == 0, res.stderr
    assert (
        "to run" not in res.stderr
        and not (out / "trials" / "sb3-trpo-CartPole-v1-s1.json").exists()
    )
    status = {(r["library"], r["agent"], r["seed"]): r["status"] for r in rows(out)}
    assert status[("sb3", "trpo", "1")] == status[("rl-trust", "trpo", "1")] == "not run"
    assert sum(s == "ok" for s in status.values()) == 6
    report = (out / "report.md").read_text()
    assert "Not run yet: 2 of 8 trials" in report and "Crashed trials" not in report
    trpo = next(line for line in report.splitlines() if line.startswith("| CartPole-v1 | trpo |"))
    assert "| 1 / 1 |" in trpo and trpo.endswith("| 0 |")


def test_sb3_runs_once_for_presets_it_cannot_tell_apart(tmp_path):
    out = tmp_path / "shared"
    args = [
        "--agents",
        "ppo,ppo-clip",
        "--envs",
        "CartPole-v1",
        "--seeds",
        "1",
        "--steps",
        "1024",
        "--set",
        "n_steps=512",
        "--out",
        str(out),
    ]
    res = cli("benchmark", *args)
    assert res.returncode == 0, res.stderr
    assert "3 to run" in res.stderr and "1 SB3 trials share another's identical run" in res.stderr
    sb3 = {r["agent"]: r for r in rows(out) if r["library"] == "sb3"}
    assert (
        sb3["ppo-clip"]["same_run_as"] == "sb3-ppo-CartPole-v1-s0" and not sb3["ppo"]["same_run_as"]
    )
    assert sb3["ppo-clip"]["final_return"] == sb3["ppo"]["final_return"] != ""
    assert (out / "tb" / "sb3-ppo-clip-CartPole-v1-s0" / "run").is_dir()  # the plots find it
    assert "1 SB3 rows repeat another's identical run" in (out / "report.md").read_text()
    again = cli("benchmark", *args)
    assert "4 complete before, 0 to run" in again.stderr


def test_a_preset_change_reruns_the_trials_it_changes_and_no_other(tmp_path, monkeypatch):
    presets = tmp_path / "presets"  # a copy of the presets, edited as a user would
    for kind in ("agents", "envs"):
        shutil.copytree(Path(config.PRESET_ROOT) / kind, presets / kind)
    env = {"RL_TRUST_PRESETS": str(presets)}
    out = tmp_path / "changed"
    args = [
        "benchmark",
        "--agents",
        "ppo,ppo-clip",
        "--envs",
        "CartPole-v1",
        "--seeds",
        "1",
        "--steps",
        "1024",
        "--set",
        "n_steps=512",
        "--out",
        str(out),
    ]
    assert cli(*args, env=env).returncode == 0
    before = {r["library"] + r["agent"]: r["final_return"] for r in rows(out)}
    cartpole = presets / "envs" / "CartPole-v1.yaml"
    cartpole.write_text(cartpole.read_text() + "per_agent:\n  ppo:\n    kl_target: 0.02\n")
    # the adaptive penalty's d_targ: ours for ppo changes, SB3's runs (no penalty) do not
    report = cli(*args, "--report-only", env=env)
    assert "rl-trust-ppo-CartPole-v1-s0 ran with another config (kl_target 0.01 → 0.02)" in (
        report.stderr
    )
    assert [r["status"] for r in rows(out) if r["library"] + r["agent"] == "rl-trustppo"] == [
        "not run"
    ]
    # the rerun is cut short before it ends (the machine stops): the changed trial's old row
    # is gone already, so its new run's config beside it cannot pass for a complete trial
    monkeypatch.setattr(config, "PRESET_ROOT", presets)
    trials = matrix.matrix(["ppo", "ppo-clip"], ["CartPole-v1"], 1, 1024, ("n_steps=512",))

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(matrix, "_local", stopped)
    said = []
    with pytest.raises(KeyboardInterrupt):
        matrix.run_matrix(trials, out, progress=said.append)
    assert "1 complete trial(s) ran with a config the presets no longer give" in said[0]
    assert not (out / "trials" / "rl-trust-ppo-CartPole-v1-s0.json").exists()
    assert len(list((out / "trials").glob("*.json"))) == 3
    res = cli(*args, env=env)
    assert res.returncode == 0, res.stderr
    assert "3 complete before, 1 to run" in res.stderr
    after = {r["library"] + r["agent"]: r["final_return"] for r in rows(out)}
    assert {k: v for k, v in after.items() if k != "rl-trustppo"} == {
        k: v for k, v in before.items() if k != "rl-trustppo"
    }
    ours = yaml.safe_load(
        (out / "tb" / "rl-trust-ppo-CartPole-v1-s0" / "run" / "config.yaml").read_text()
    )
    assert ours["agent"]["kl_target"] == 0.02
    assert "4 complete before, 0 to run" in cli(*args, env=env).stderr
    # γ reaches every trial, SB3's included
    cartpole.write_text(cartpole.read_text() + "gamma: 0.98\n")
    report = cli(*args, "--report-only", env=env)
    assert report.stderr.count("ran with another config (gamma 0.99 → 0.98") == 4, report.stderr
    assert {r["status"] for r in rows(out)} == {"not run"}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_benchmark_stops_its_trials_and_resumes(tmp_path, signum, code):
    out = tmp_path / "interrupted"
    args = [
        "benchmark",
        "--agents",
        "ppo-clip",
        "--envs",
        "CartPole-v1",
        "--seeds",
        "2",
        "--steps",
        "8192",
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen([RL_TRUST, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("trials/*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until the first trial is complete, with the next ones running
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith("rl-trust: benchmark interrupted with ")
    assert "run the same command again to resume" in err
    complete = len(list(out.glob("trials/*.json")))
    assert 1 <= complete < 4
    running = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout
    assert running == ""  # no trial process outlives the benchmark
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"{complete} complete before, {4 - complete} to run" in again.stderr


def test_a_linear_schedule_is_the_same_sb3_argument_when_its_rate_is(tmp_path):
    """config_change compares SB3's arguments: a linear learning-rate schedule built twice
    from the same config must compare equal (else every such complete SB3 trial reads as
    changed and reruns), and differ when the rate does."""
    from rl_trust.benchmark.matrix import Trial, config_change

    trial = Trial("sb3", "ppo-clip", "CartPole-v1", 0, 2048, ("lr_schedule=linear",))
    folder = tmp_path / "tb" / trial.name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(trial.config().to_dict()))
    assert config_change(trial, tmp_path) is None
    faster = dataclasses.replace(trial, overrides=(*trial.overrides, "learning_rate=1e-3"))
    assert config_change(faster, tmp_path) == "learning_rate 0.0003 → 0.001"


def test_a_trial_cut_short_continues_from_its_own_checkpoint(tmp_path):
    """The machine goes away mid-trial (SIGKILL to the benchmark and its trials, no chance to
    save): the rerun continues both libraries' trials from their last checkpoints instead
    of step 0; the curves join without a repeated step, the row counts two attempts and the
    largest peak RSS; a changed config starts the trial afresh instead."""
    from rl_trust.benchmark.matrix import Trial, resume_point
    from rl_trust.benchmark.sb3 import saved_step

    out = tmp_path / "cut"
    args = [
        "benchmark",
        "--agents",
        "ppo-clip",
        "--envs",
        "CartPole-v1",
        "--seeds",
        "1",
        "--steps",
        "32768",
        "--set",
        "checkpoint_every=2048",
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    ours, theirs = (out / "tb" / f"{lib}-ppo-clip-CartPole-v1-s0" for lib in ("rl-trust", "sb3"))
    proc = subprocess.Popen([RL_TRUST, *args], stderr=subprocess.DEVNULL, start_new_session=True)

    def our_step() -> int:
        steps = [int(p.name[5:]) for p in (ours / "run" / "checkpoints").glob("step_*")]
        return max(steps, default=0)

    deadline = time.monotonic() + 240
    while not (our_step() and saved_step(theirs / "sb3_checkpoint")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = {"rl-trust": our_step(), "sb3": saved_step(theirs / "sb3_checkpoint")}
    assert 0 < cut["rl-trust"] < 32768 and 0 < cut["sb3"] < 32768, cut
    assert not list(out.glob("trials/*.json"))

    again = cli(*args)
    assert again.returncode == 0, again.stderr
    for lib, folder in (("rl-trust", ours), ("sb3", theirs)):
        assert f"{folder.name}: continues from its checkpoint at step {cut[lib]:,}" in again.stderr
        row = json.loads((out / "trials" / f"{folder.name}.json").read_text())
        assert row["status"] == "ok" and row["steps"] == 32768 and row["segments"] == 2
        attempts = json.loads((folder / "attempts.json").read_text())
        assert [a["from_step"] for a in attempts] == [0, cut[lib]]
        assert attempts[0]["exit"] is None and attempts[1]["exit"] == 0  # (killed: unknown)
        assert row["peak_rss_mib"] == attempts[1]["peak_rss_mib"] > 50
        steps = [e.step for e in events(folder / "run").Scalars("rollout/ep_rew_mean")]
        assert steps == sorted(set(steps)) and steps[0] <= cut[lib] < steps[-1], steps
    trial = Trial("rl-trust", "ppo-clip", "CartPole-v1", 0, 32768, ("checkpoint_every=2048",))
    assert resume_point(trial, ours) == 32768
    changed = dataclasses.replace(trial, overrides=(*trial.overrides, "gamma=0.98"))
    assert resume_point(changed, ours) is None
    assert resume_point(dataclasses.replace(changed, library="sb3"), theirs) is None


def test_a_crashed_trial_is_reported_not_dropped(tmp_path):
    out = tmp_path / "crash"
    res = cli(
        "benchmark",
        "--agents",
        "ppo",
        "--envs",
        "rl_trust/TupleAction-v0",
        "--seeds",
        "1",
        "--steps",
        "512",
        "--out",
        str(out),
    )
    assert res.returncode == 1
    table = rows(out)
    assert [r["status"] for r in table] == ["crashed", "crashed"]
    assert all(r["error"].startswith("exit ") for r in table)
    assert "Crashed trials:" in (out / "report.md").read_text()
    assert "CRASHED" in res.stderr
    again = cli(
        "benchmark",
        "--agents",
        "ppo",
        "--envs",
        "rl_trust/TupleAction-v0",
        "--seeds",
        "1",
        "--steps",
        "512",
        "--out",
        str(out),
    )
    assert again.returncode == 1 and "0 complete before, 2 to run" in again.stderr  # retried
    assert [r["error"] for r in rows(out)] == [r["error"] for r in table]  # the same failure


def test_the_ray_backend_gives_the_local_results(local, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    loopback = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    res = cli("benchmark", *TINY, "--backend", "ray", "--out", str(out), timeout=600, env=loopback)
    assert res.returncode == 0, res.stderr
    key = lambda r: (r["library"], r["agent"], r["seed"])  # noqa: E731
    got = {key(r): (r["steps"], r["final_return"]) for r in rows(out)}
    assert got == {key(r): (r["steps"], r["final_return"]) for r in rows(local)}
    assert len(list((out / "tb").glob("*/run/events.out.tfevents.*"))) == 8  # came back


def test_plot_draws_any_runs(local, tmp_path):
    runs = [str(p / "run") for p in sorted((local / "tb").iterdir())[:2]]
    res = cli(
        "plot",
        *runs,
        "--tags",
        "rollout/ep_rew_mean,kl/forward_mean|train/approx_kl",
        "--out",
        str(tmp_path / "curves.png"),
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    res = cli("plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "no TensorBoard event files" in res.stderr
    shutil.copy(Path(runs[0]) / "curves.csv", tmp_path)  # as a committed benchmark keeps it
    res = cli("plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((local / "trials" / "sb3-trpo-CartPole-v1-s0.json").read_text())["fps"] > 0


def _zoo_module():
    import importlib.util

    path = Path(__file__).parent.parent / "benchmarks/learning/rl-zoo3/zoo.py"
    spec = importlib.util.spec_from_file_location("zoo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rl_zoo3_report_holds_its_runs_beside_the_marks(tmp_path):
    zoo = _zoo_module()
    (tmp_path / "trials").mkdir()
    # Hopper PPO's three seeds as rl-zoo3 ran them (2026-12-05), one crashed run and no others
    for seed, final, det in [(0, 500.9, 997.4), (1, 1000.5, 1003.2), (2, 329.0, 239.8)]:
        row = {"agent": "ppo", "env": "Hopper-v5", "seed": seed, "status": "ok",
               "final_return": final, "eval_return": det, "fps": 600.0 + seed}  # fmt: skip
        (tmp_path / "trials" / f"ppo-Hopper-s{seed}.json").write_text(json.dumps(row))
    crashed = {"agent": "trpo", "env": "Hopper-v5", "seed": 0, "status": "crashed"}
    (tmp_path / "trials" / "trpo-Hopper-s0.json").write_text(json.dumps(crashed))
    text = zoo.report(tmp_path).read_text()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()]
    rows = {(c[0], c[1]): c for c in cells if c[0] in ("ppo", "trpo")}
    assert len(rows) == 6  # every algo and env, run or not
    hopper = rows[("ppo", "Hopper-v5")]
    assert hopper[2] == "3" and hopper[3].startswith("610.1 [")  # of 3 seeds, the IQM is the mean
    assert hopper[4] == "s0 500.9, s1 1000.5, s2 329.0" and hopper[5] == "746.8"
    assert hopper[7] == "2410" and hopper[8] == "610.1"  # rl-zoo3 below the mark: its own return
    not_run = [c for c in rows.values() if c[2] == "0"]
    assert len(not_run) == 5 and all(c[3] == "not run yet" for c in not_run)  # the crash too
    assert rows[("trpo", "Walker2d-v5")][7] == "4933" and rows[("trpo", "HalfCheetah-v5")][7] == "–"


def test_the_committed_rl_zoo3_report_is_its_committed_runs(tmp_path):
    zoo = _zoo_module()
    here = Path(__file__).parent.parent / "benchmarks/learning/rl-zoo3"
    shutil.copytree(here / "trials", tmp_path / "trials")
    assert zoo.report(tmp_path).read_text() == (here / "report.md").read_text(), (
        "rerun `python benchmarks/learning/rl-zoo3/zoo.py report` after syncing its trials"
    )
