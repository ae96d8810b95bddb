"""The KL controllers (kl_controller=paper|rllib|pid): hand-computed sequences, their tags in a
CLI run's event file, and their state across a checkpoint."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import cli, events, scalars, train_and_resume
from test_agents import setup
from test_cli import layout_of

from rl_trust import checkpoint, kl_control
from rl_trust import tags as T
from rl_trust.benchmark.report import kl_band_stats
from rl_trust.kl_control import PaperRule, PIDControl, RLlibRule

NAN, INF = float("nan"), float("inf")


def test_paper_rule_is_the_papers_adaptive_beta():
    rule = PaperRule(1.0, 0.01)
    kls = [0.001, 0.02, 0.01, NAN, 0.0067, 0.0066, 0.0151, 0.015, INF, 0.03]
    seen = []
    for d in kls:
        assert rule.step_beta(0.5) == rule.beta  # no running KL consulted: β fixed per update
        rule.update(d)
        seen.append(rule.beta)
    assert seen == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 2.0]
    assert rule.update(0.01 * math.e)["kl/ctl_error"] == pytest.approx(1.0)


def test_rllib_rule_moves_by_half_and_one_and_a_half_at_half_and_twice_the_target():
    rule = RLlibRule(1.0, 0.01)
    kls = [0.025, 0.02, 0.004, 0.005, NAN, 0.1, 0.0049, 0.012]
    seen = []
    for d in kls:
        rule.update(d)
        seen.append(rule.beta)
    assert seen == [1.5, 1.5, 0.75, 0.75, 0.75, 1.125, 0.5625, 0.5625]


def test_pid_on_log_beta_on_a_hand_computed_sequence():
    """Kp 2, Ki 0.5, Kd 1, d_targ 0.01, β₀ 1; running KLs chosen so that ê is 0.5, ±2, 0."""
    pid = PIDControl(1.0, 0.01, kp=2.0, ki=0.5, kd=1.0)
    exp, at = math.exp, lambda e: 0.01 * math.exp(e)  # the KL whose log error is e
    # update 1: I 0, D 0; P = 2ê per step: none without a running KL, −4 at KL 0 (ê clamped
    # to −2), +1 at ê 0.5, +4 far above (ê clamped to 2)
    steps = [pid.step_beta(None), pid.step_beta(0.0), pid.step_beta(at(0.5)), pid.step_beta(1.0)]
    assert steps == pytest.approx([1.0, exp(-4), exp(1), exp(4)])
    tags = pid.update(at(0.5))
    assert tags == pytest.approx(
        {
            "kl/ctl_error": 0.5,
            "kl/ctl_p": 0.25,
            "kl/ctl_p_max": 4.0,
            "kl/ctl_i": 0.0,
            "kl/ctl_d": 0.0,
            "kl/beta_max": exp(4),
        }
    )
    # I ← 0 + 0.5·0.5 = 0.25, D ← 1·max(0, 0.5 − 0) = 0.5
    assert pid.beta == pytest.approx(exp(0.75))
    # update 2: at the target the step's β is the integral's and derivative's
    assert pid.step_beta(0.01) == pytest.approx(exp(0.75))
    tags = pid.update(at(-1.0))
    assert tags == pytest.approx(
        {
            "kl/ctl_error": -1.0,
            "kl/ctl_p": 0.0,
            "kl/ctl_p_max": 0.0,
            "kl/ctl_i": 0.25,
            "kl/ctl_d": 0.5,
            "kl/beta_max": exp(0.75),
        }
    )
    # I ← 0.25 − 0.5 = −0.25; the error fell: D ← 0
    assert pid.beta == pytest.approx(exp(-0.25))
    # update 3, no gradient step (P 0): the error rose from −1 to 1, D ← 1·2
    assert pid.update(at(1.0))["kl/ctl_p"] == 0.0
    assert pid.beta == pytest.approx(exp(0.25 + 2.0))
    # a NaN KL says nothing: the state stays
    state = pid.state_dict()
    assert math.isnan(pid.update(NAN)["kl/ctl_error"])
    assert pid.state_dict() == state
    # the integral is held within LOG_BETA_RANGE (anti-windup)
    windup = PIDControl(1.0, 0.01, kp=0.0, ki=10.0, kd=0.0)
    windup.update(1.0)
    assert windup.beta == pytest.approx(1e4)
    for _ in range(3):
        windup.update(0.0)
    assert windup.beta == pytest.approx(1e-4)


def test_step_fraction_on_hand_computed_kl_curves():
    calls = []

    def curve(f):
        def kl_at(t):
            calls.append(t)
            return f(t)

        return kl_at

    step_fraction = kl_control.step_fraction
    # in band: the whole step, nothing measured
    assert step_fraction(curve(lambda t: pytest.fail("measured")), 0.012, 0.01) == (1.0, 0.012)
    # quadratic: the first try, t = (d_targ / d)^(1/2), lands on d_targ
    assert step_fraction(curve(lambda t: 0.04 * t * t), 0.04, 0.01) == pytest.approx((0.5, 0.01))
    # quartic: t 0.5 gives 0.0025 (below); the log-log slope 4 from the two points, then
    # t = 0.5·(0.01 / 0.0025)^(1/4) = 2^(-1/2), KL 0.01
    calls.clear()
    t, kl = step_fraction(curve(lambda t: 0.04 * t**4), 0.04, 0.01)
    assert calls == pytest.approx([0.5, 2**-0.5]) and (t, kl) == pytest.approx((2**-0.5, 0.01))
    # below the band: lengthened to t_max at most (KL 0.004 at t 2), and no further try
    calls.clear()
    assert step_fraction(curve(lambda t: 0.001 * t * t), 0.001, 0.01) == pytest.approx((2, 0.004))
    assert calls == [2.0]
    # a step KL that jumps: never a t above the band when one below it was measured
    t, kl = step_fraction(curve(lambda t: 0.03 if t > 0.3 else 0.001), 0.03, 0.01)
    assert t < 0.3 and kl == 0.001
    # a try whose KL is NaN ends the search and is never chosen: the whole step
    calls.clear()
    assert step_fraction(curve(lambda t: NAN), 0.04, 0.01) == (1.0, 0.04) and len(calls) == 1
    # a NaN step KL says nothing: the whole step
    t, kl = step_fraction(curve(lambda t: pytest.fail("measured")), NAN, 0.01)
    assert t == 1.0 and math.isnan(kl)


def test_kl_rescale_scales_the_policys_step_into_the_band_and_leaves_the_critic():
    """A learning rate far too high for d_targ 0.01 at β 0 and no clip: the step's own KL is
    above the band; rescaled, the batch's KL is in it, the policy's weights are
    θ_start + t·Δ and the critic's are the unscaled update's."""
    over = dict(kl_penalty="fixed", kl_beta=0.0, learning_rate=0.01, batch_size=64, clip=False)
    runs = []
    for rescale in (False, True):
        cfg, agent, collector = setup("ppo", kl_rescale=rescale, **over)
        batch = collector.collect()
        start = agent.weights.detach().clone()
        runs.append((agent, start, agent.update(batch)))
    (plain, start, m0), (scaled, start1, m) = runs
    assert torch.equal(start, start1)
    assert "kl/step_fraction" not in m0 and m["kl/step_kl"] == pytest.approx(m0["kl/forward_mean"])
    assert m["kl/step_kl"] > 0.015 and 0.01 / 1.5 <= m["kl/forward_mean"] <= 0.015
    t, part = m["kl/step_fraction"], scaled.policy_part
    assert 0 < t < 1 and part.any() and not part.all()
    step = plain.weights.detach() - start
    assert torch.allclose(scaled.weights[part], (start + t * step)[part], atol=1e-6)
    assert torch.equal(scaled.weights[~part], plain.weights.detach()[~part])
    assert m["kl/in_band"] == 1.0


def test_kl_step_max_bounds_how_far_a_short_step_is_lengthened():
    """A learning rate far too low for d_targ 0.01: the step's own KL is below the band and
    the rescale lengthens it, never past kl_step_max (1: not at all), and a larger bound
    takes it further."""
    under = dict(kl_penalty="fixed", kl_beta=0.0, learning_rate=2e-5, kl_rescale=True)
    fractions = {}
    for most in (1.0, 2.0, 8.0):
        _, agent, collector = setup("ppo", kl_step_max=most, **under)
        m = agent.update(collector.collect())
        assert m["kl/step_kl"] < 0.01 / 1.5  # (the same step each time: same seed)
        fractions[most] = m["kl/step_fraction"]
        assert 1.0 <= fractions[most] <= most
    assert fractions[1.0] == 1.0 and fractions[2.0] == 2.0 < fractions[8.0]


def test_kl_lengthen_check_keeps_a_lengthened_step_only_where_the_surrogate_holds(monkeypatch):
    """A short step whose surrogate falls the further the policy moves: with the check the
    whole step is kept (t = 1, KL below the band); without it the step is lengthened into
    the band all the same."""
    from rl_trust.agents import ppo

    def falling(family, params, actions, log_probs, adv):  # highest at the old policy
        return -(params - falling.old).abs().sum()

    monkeypatch.setattr(ppo.natural_gradient, "surrogate", falling)
    under = dict(kl_penalty="fixed", kl_beta=0.0, learning_rate=1e-4, kl_rescale=True)
    for check in (True, False):
        _, agent, collector = setup("ppo", kl_lengthen_check=check, kl_step_max=8.0, **under)
        batch = collector.collect()
        falling.old = batch.dist_params
        m = agent.update(batch)
        assert m["kl/step_kl"] < 0.01 / 1.5
        if check:
            assert m["kl/step_fraction"] == 1.0 and m["kl/in_band"] == 0.0
        else:
            assert m["kl/step_fraction"] > 1.0 and m["kl/in_band"] == 1.0


def test_log_error_is_clamped_and_nan_for_a_kl_that_says_nothing():
    assert kl_control.log_error(0.02, 0.01) == pytest.approx(math.log(2))
    assert kl_control.log_error(1.0, 0.01) == kl_control.MAX_ERROR == 2.0
    assert kl_control.log_error(0.0, 0.01) == -2.0
    assert kl_control.log_error(1e-9, 0.01) == -2.0
    assert math.isnan(kl_control.log_error(NAN, 0.01))
    assert math.isnan(kl_control.log_error(INF, 0.01))


def test_a_bad_controller_name_is_one_line_and_exit_2():
    res = cli("config", "--agent", "ppo", "--set", "kl_controller=pdi")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "rl-trust: error: kl_controller='pdi' is not valid: kl_controller takes one of "
        "paper, rllib, pid"
    )
    res = cli("config", "--agent", "ppo", "--set", "kl_kp=-1")
    assert res.returncode == 2 and "kl_kp=-1.0 is out of range" in res.stderr


def test_the_agent_builds_the_configured_controller():
    for name, cls in kl_control.CONTROLLERS.items():
        _, agent, _ = setup("ppo", kl_controller=name)
        assert type(agent.controller) is cls
    _, fixed, _ = setup("ppo-fixed", kl_controller="pid", kl_beta=0.5)
    assert type(fixed.controller) is kl_control.FixedBeta and fixed.beta == 0.5
    _, clip, _ = setup("ppo-clip")
    assert clip.beta == 0.0


def test_pid_state_survives_a_checkpoint_exactly(tmp_path: Path):
    cfg, agent, collector = setup("ppo", kl_controller="pid", kl_kd=0.5, batch_size=64)
    for _ in range(3):
        agent.update(collector.collect())
    saved = agent.controller.state_dict()
    assert saved["integral"] != 0.0 and saved["error"] != 0.0
    learner = {  # a checkpoint holds a learner's state (checkpoint.SCHEMA), the agent's in it
        "step": 1,
        "updates": 3,
        "best_eval": None,
        "policy": {},
        "agent": agent.state_dict(),
        "normalizer": {},
        "rng": {},
        "episodes": {"returns": [], "lengths": [], "count": 0},
        "spaces": {"observation": "", "action": ""},
        "config": {},
        "versions": {},
    }
    path = checkpoint.save(tmp_path, 1, learner, keep=1)
    _, fresh, _ = setup("ppo", kl_controller="pid", kl_kd=0.5, batch_size=64)
    assert fresh.controller.state_dict() != saved
    fresh.load_state_dict(checkpoint.load(path)["agent"])
    assert fresh.controller.state_dict() == saved  # bit for bit, through JSON
    assert fresh.beta == agent.beta == agent.controller.beta
    assert fresh.controller.step_beta(0.03) == agent.controller.step_beta(0.03)


PID_TAGS = ["kl/ctl_error", "kl/ctl_p", "kl/ctl_p_max", "kl/ctl_i", "kl/ctl_d", "kl/beta_max"]


@pytest.fixture(scope="module")
def pid_run(tmp_path_factory) -> Path:
    """The default ppo (PID and the kl_rescale backstop), with a D term: 2 updates,
    checkpointed and resumed for 2 more, through the CLI."""
    run = tmp_path_factory.mktemp("pid") / "run"
    res = cli(
        "train",
        "--agent",
        "ppo",
        "--env",
        "CartPole-v1",
        "--steps",
        "1024",
        "--seed",
        "0",
        "--set",
        "kl_kd=0.5",
        "--set",
        "n_steps=512",
        "--set",
        "batch_size=128",
        "--set",
        "n_epochs=4",
        "--run-dir",
        str(run),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    res = cli("resume", str(run), "--steps", "2048", "--no-progress")
    assert res.returncode == 0, res.stderr
    return run


def test_pid_tags_follow_the_controller_across_a_resume(pid_run: Path):
    acc = events(pid_run)
    names = ["kl/forward_mean", "kl/in_band", "kl/beta", "kl/step_kl", "kl/step_fraction"]
    tags = {t: scalars(acc, t) for t in [*names, *PID_TAGS]}
    steps = sorted(tags["kl/forward_mean"])
    assert steps == [512, 1024, 1536, 2048]  # 2 updates before the checkpoint, 2 after
    assert all(sorted(v) == steps for v in tags.values())
    kl, e, i, d = (tags[t] for t in ("kl/forward_mean", "kl/ctl_error", "kl/ctl_i", "kl/ctl_d"))
    assert i[512] == 0.0 and d[512] == 0.0  # log β₀ = log 1
    own, kept = tags["kl/step_kl"], tags["kl/step_fraction"]
    for s in steps:
        assert tags["kl/in_band"][s] == float(0.01 / 1.5 <= kl[s] <= 0.015)
        # the controller sees the step's own KL; the policy keeps t of the step
        assert e[s] == pytest.approx(min(max(math.log(own[s] / 0.01), -2), 2), abs=1e-5)
        if kept[s] == 1.0:
            assert kl[s] == pytest.approx(own[s], rel=1e-5)
        else:
            assert (kl[s] < own[s]) == (kept[s] < 1.0)
        assert tags["kl/beta"][s] == pytest.approx(math.exp(i[s] + d[s]), rel=1e-5)
        assert tags["kl/beta_max"][s] == pytest.approx(
            math.exp(i[s] + d[s] + tags["kl/ctl_p_max"][s]), rel=1e-5
        )
        assert tags["kl/ctl_p"][s] <= tags["kl/ctl_p_max"][s]
    assert any(t != 1.0 for t in kept.values())  # the backstop acted at least once
    # the integral and the derivative carry on from the update before, the resume included:
    # a controller rebuilt from the config instead of the checkpoint would restart at 0
    previous_error = 0.0
    for prev, cur in zip(steps, steps[1:], strict=False):
        assert i[cur] == pytest.approx(i[prev] + 0.5 * e[prev], abs=1e-5)
        assert d[cur] == pytest.approx(0.5 * max(0.0, e[prev] - previous_error), abs=1e-5)
        previous_error = e[prev]
    assert any(v != 0 for v in i.values())


def test_the_dashboard_shows_the_band_and_the_controller(pid_run: Path):
    charts = layout_of(events(pid_run))
    multiline = {title: c[2] for title, c in charts.items() if c[1] == "multiline"}
    shown = [  # the tags each chart's patterns match
        {tag for tag in T.MEANINGS if any(re.search(p, tag) for p in patterns)}
        for patterns in multiline.values()
    ]
    assert {"kl/in_band"} in shown
    assert {"kl/ctl_error", "kl/ctl_p", "kl/ctl_p_max", "kl/ctl_i", "kl/ctl_d"} in shown
    assert {"kl/beta", "kl/beta_max"} in shown
    assert {"kl/step_kl", "kl/step_fraction"} in shown
    assert all(c[0] == "Trust region" for c in charts.values())


def test_paper_runs_log_in_band_and_the_error_only(paper_run: Path):
    acc = events(paper_run)
    written = set(acc.Tags()["scalars"])
    assert {"kl/in_band", "kl/ctl_error"} <= written
    assert not {"kl/ctl_i", "kl/ctl_p", "kl/beta_max"} & written
    kl, band = scalars(acc, "kl/forward_mean"), scalars(acc, "kl/in_band")
    assert band == {s: float(0.01 / 1.5 <= d <= 0.015) for s, d in kl.items()}


def test_a_benchmark_of_our_agents_only_reports_kl_control(tmp_path: Path):
    import csv

    from rl_trust.benchmark.report import prob_improvement

    out = tmp_path / "bench"
    res = cli(
        "benchmark",
        "--agents",
        "ppo-pid,ppo-clip",
        "--envs",
        "CartPole-v1",
        "--seeds",
        "2",
        "--steps",
        "1024",
        "--set",
        "n_steps=256",
        "--libraries",
        "rl-trust",
        "--workers",
        "2",
        "--out",
        str(out),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["library"], r["agent"], r["seed"]) for r in rows} == {
        ("rl-trust", a, s) for a in ("ppo-pid", "ppo-clip") for s in ("0", "1")
    }
    report = (out / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("| CartPole-v1 | ppo-pid | 0.01 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # the report's in-band share is the agent's own kl/in_band tag, over both seeds' updates
    logged = [
        v
        for s in (0, 1)
        for v in scalars(
            events(out / "tb" / f"rl-trust-ppo-pid-CartPole-v1-s{s}" / "run"), "kl/in_band"
        ).values()
    ]
    assert len(logged) == 8 and cells[3] == f"{100 * sum(logged) / len(logged):.1f}%"
    returns = {
        a: [float(r["final_return"]) for r in rows if r["agent"] == a]
        for a in ("ppo-pid", "ppo-clip")
    }
    assert cells[8].startswith(f"{prob_improvement(returns['ppo-pid'], returns['ppo-clip']):.2f}")
    clip = next(x for x in report.splitlines() if x.startswith("| CartPole-v1 | ppo-clip | 0.01 |"))
    assert clip.rstrip().endswith("| – | 2 |")  # no P against itself


def test_the_band_and_rllib_thresholds_are_numbers_not_constants():
    band = kl_control.KLBand(0.01)
    assert (band.low, band.high) == (pytest.approx(0.01 / 1.5), pytest.approx(0.015))
    assert band.contains(0.01) and not band.contains(0.016) and not band.contains(0.006)
    assert not band.contains(NAN)
    wide = RLlibRule(1.0, 0.01, band=3.0, up=2.0, down=0.25)
    wide.update(0.025)  # within 3× of d_targ: β stays (RLlib's own 2× would raise it)
    assert wide.beta == 1.0
    wide.update(0.031)
    assert wide.beta == 2.0
    wide.update(0.003)
    assert wide.beta == 0.5


def test_a_target_per_action_dimension_is_held_at_target_times_the_dimensions():
    # Hopper's Gaussian has 3 dimensions, whose KLs add: per dimension, d_targ is 3·0.01;
    # CartPole's one categorical action keeps 0.01
    for env, dims in (("Hopper-v5", 3), ("CartPole-v1", 1)):
        for per_dim in (False, True):
            _, agent, collector = setup("ppo", env, kl_target_per_dim=per_dim)
            want = 0.01 * (dims if per_dim else 1)
            assert agent.d_targ == pytest.approx(want)
            assert agent.controller.d_targ == pytest.approx(want)
            m = agent.update(collector.collect())
            assert m["kl/target"] == pytest.approx(want)
            assert m["kl/target_high"] == pytest.approx(1.5 * want)
            assert m["kl/in_band"] == float(want / 1.5 <= m["kl/forward_mean"] <= 1.5 * want)


def test_an_annealed_target_moves_linearly_over_training_and_across_a_resume(tmp_path):
    # kl_target_final: d_targ goes from kl_target to it in proportion to the share of the run
    # done before each update's rollout (as SB3's schedules): the CLI's run, read back from its
    # events, trained to 1024 steps and resumed to 2048 (the resumed updates anneal over the
    # new total)
    run = tmp_path / "run"
    train_and_resume(run, "kl_target=0.02", "kl_target_final=0.005")  # 128 steps an update
    acc = events(run)
    target, kl, in_band = (scalars(acc, t) for t in (T.KL_TARGET, T.KL_FORWARD_MEAN, T.KL_IN_BAND))
    assert sorted(target) == [128 * k for k in range(1, 17)]
    for step, d_targ in target.items():
        total = 1024 if step <= 1024 else 2048
        done = (step - 128) / total  # (the event's step counts the update's own rollout)
        assert d_targ == pytest.approx(0.005 + 0.015 * (1 - done), rel=1e-6)
        assert in_band[step] == float(d_targ / 1.5 <= kl[step] <= 1.5 * d_targ)
    assert target[128] == pytest.approx(0.02) and target[1152] == pytest.approx(0.0125)
    # the benchmark's band statistics judge each update against its own d_targ
    stats = kl_band_stats(run)
    assert stats["in_band"] == pytest.approx(sum(in_band.values()) / len(in_band))
    assert stats["target"] == pytest.approx(target[2048])


def test_an_annealed_target_is_what_the_controller_holds():
    _, agent, collector = setup("ppo", "CartPole-v1", kl_target=0.04, kl_target_final=0.01)
    batch = collector.collect()
    for remaining, want in ((1.0, 0.04), (0.5, 0.025), (0.0, 0.01)):
        m = agent.update(batch, progress_remaining=remaining)
        assert agent.d_targ == agent.controller.d_targ == pytest.approx(want)
        assert m[T.KL_TARGET] == pytest.approx(want)
        assert m[T.KL_CTL_ERROR] == pytest.approx(
            min(max(math.log(m[T.KL_STEP_KL] / want), -2), 2), abs=1e-5
        )
