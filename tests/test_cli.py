"""The product as a user runs it: `rl-trust` in a subprocess, its outputs read back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import cli, events, scalars
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from rl_trust import config
from rl_trust import tags as T

KL_TAGS = (
    "kl/forward_mean kl/forward_max kl/forward_p95 "
    "kl/reverse_mean kl/k1 kl/k2 kl/k3 kl/entropy "
    "kl/cross_entropy kl/target kl/target_low kl/target_high"
).split()
SB3_TAGS = (
    "rollout/ep_rew_mean rollout/ep_len_mean time/fps "
    "train/approx_kl train/clip_fraction train/entropy_loss "
    "train/policy_gradient_loss train/value_loss "
    "train/explained_variance train/learning_rate"
).split()
TRPO_TAGS = (
    "trpo/cg_iters trpo/cg_residual trpo/linesearch_steps "
    "trpo/accepted trpo/expected_improve trpo/actual_improve "
    "trpo/step_norm"
).split()


def layout_of(acc) -> dict[str, list]:
    proto = acc.Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(proto).item())
    charts = {}
    for category in layout.category:
        for chart in category.chart:
            kind = chart.WhichOneof("content")
            c = getattr(chart, kind)
            tags = (
                [s.value for s in c.series]
                + [s.lower for s in c.series]
                + [s.upper for s in c.series]
                if kind == "margin"
                else list(c.tag)
            )
            charts[chart.title] = [category.title, kind, tags]
    return charts


def hparams_of(acc) -> dict:
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in info.hparams.items()
    }


def test_train_writes_run_folder_and_every_ppo_tag(ppo_run: Path):
    assert ppo_run.name.startswith("ppo-CartPole-v1-s0-")
    for name in ("config.yaml", "summary.json"):
        assert (ppo_run / name).is_file()
    assert list((ppo_run / "checkpoints").glob("step_*/tensors.safetensors"))
    summary = json.loads((ppo_run / "summary.json").read_text())
    assert summary["steps"] == 2048 and summary["updates"] == 4
    acc = events(ppo_run)
    tags = set(acc.Tags()["scalars"])
    missing = [t for t in KL_TAGS + ["kl/beta"] + SB3_TAGS if t not in tags]
    assert not missing, missing
    assert "kl/forward" in acc.Tags()["histograms"]
    # the x axis is the env-step count, one point per update
    assert sorted(scalars(acc, "kl/forward_mean")) == [512, 1024, 1536, 2048]
    # the default ppo: the clip (its fraction), PID on log β (its terms) and the kl_rescale
    # backstop (the step's own KL and the fraction kept, at most kl_step_max = 4)
    assert {"kl/ctl_p", "kl/ctl_i", "kl/step_kl", "kl/step_fraction"} <= tags
    assert scalars(acc, "kl/beta")[512] == 1.0
    assert max(scalars(acc, "kl/step_fraction").values()) <= 4.0
    assert max(scalars(acc, "train/clip_fraction").values()) > 0


def test_the_paper_rule_moves_beta_from_the_logged_kl(paper_run: Path):
    # β follows the paper's rule from the logged KL: each update's β is the previous β
    # halved, doubled or kept according to the previous update's kl/forward_mean
    acc = events(paper_run)
    beta, kl = scalars(acc, "kl/beta"), scalars(acc, "kl/forward_mean")
    steps = sorted(beta)
    assert len(steps) == 4 and beta[steps[0]] == 1.0
    for prev, cur in zip(steps, steps[1:], strict=False):
        d = kl[prev]
        want = beta[prev] / 2 if d < 0.01 / 1.5 else beta[prev] * 2 if d > 0.015 else beta[prev]
        assert beta[cur] == pytest.approx(want)


def test_ppo_layout_and_hparams(ppo_run: Path):
    acc = events(ppo_run)
    charts = layout_of(acc)
    margin = [c for c in charts.values() if c[1] == "margin"]
    assert margin and margin[0][0] == "Trust region"
    assert set(margin[0][2]) == {T.KL_FORWARD_MEAN, T.KL_TARGET_LOW, T.KL_TARGET_HIGH}
    shown = {  # every tag some multiline chart's pattern matches
        tag
        for c in charts.values()
        if c[1] == "multiline"
        for tag in T.MEANINGS
        if any(re.search(p, tag) for p in c[2])
    }
    assert {"kl/beta", "kl/k1", "kl/k2", "kl/k3", "kl/reverse_mean"} <= shown
    hp = hparams_of(acc)
    assert hp["agent"] == "ppo" and hp["kl_penalty"] == "adaptive" and hp["n_steps"] == 512
    assert hp["kl_controller"] == "pid" and hp["kl_rescale"] in (True, 1.0, "True", "true")


def test_config_output_loads_back_into_the_same_config():
    res = cli(
        "config",
        "--agent",
        "ppo-clip",
        "--env",
        "Pendulum-v1",
        "--set",
        "n_steps=512",
        "--set",
        "net_arch=[32,32]",
        "--seed",
        "3",
    )
    assert res.returncode == 0, res.stderr
    printed = config.from_dict(yaml.safe_load(res.stdout))
    expected = config.load(
        "ppo-clip", "Pendulum-v1", {"n_steps": 512, "net_arch": [32, 32]}, seed=3
    )
    assert printed == expected
    assert printed.env.n_envs == 4 and printed.agent.gamma == 0.9  # from envs/Pendulum-v1.yaml


def test_env_sections_reach_every_agent_of_the_algorithm_or_one_agent():
    # envs/Hopper-v5.yaml: per_algo.trpo (δ 0.03) for trpo and npg; per_agent.ppo-paper
    # (d_targ 0.02) for the agent ppo-paper, not for ppo, ppo-zoo (its own 0.01) nor ppo-clip
    load = {a: config.load(a, "Hopper-v5", {}, None, 0).agent for a in config.presets("agents")}
    assert load["trpo"].target_kl == load["npg"].target_kl == 0.03
    assert load["ppo-paper"].kl_target == 0.02
    assert load["ppo"].kl_target == load["ppo-zoo"].kl_target == load["ppo-clip"].kl_target == 0.01
    # LunarLander's d_targ 0.005 is the paper rule's alone (per_agent.ppo-paper)
    lunar = {a: config.load(a, "LunarLander-v3", {}, None, 0).agent for a in ("ppo", "ppo-paper")}
    assert lunar["ppo-paper"].kl_target == 0.005 and lunar["ppo"].kl_target == 0.01
    assert lunar["ppo-paper"].n_steps == lunar["ppo"].n_steps == 1024  # per_algo reaches both
    # per_tuning.ppo-zoo for both zoo presets; Walker2d's per_agent.ppo-zoo (d_targ 0.005) not
    # for ppo-clip-zoo, whose zoo values it shares
    walker = {
        a: config.load(a, "Walker2d-v5", {}, None, 0).agent for a in ("ppo-zoo", "ppo-clip-zoo")
    }
    assert walker["ppo-zoo"].kl_target == 0.005 and walker["ppo-clip-zoo"].kl_target == 0.01
    assert walker["ppo-zoo"].n_epochs == walker["ppo-clip-zoo"].n_epochs == 20
    assert config.load("trpo", "CartPole-v1", {}, None, 0).agent.target_kl == 0.01


def test_a_misnamed_env_section_is_one_line_error(tmp_path: Path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "agents").symlink_to(Path(config.PRESET_ROOT) / "agents")
    for kind, name in (("per_algo", "ppo-clip"), ("per_tuning", "ppo"), ("per_agent", "ppo-clipp")):
        (tmp_path / "envs" / "CartPole-v1.yaml").write_text(
            f"{kind}:\n  {name}:\n    n_steps: 64\n"
        )
        res = cli("config", "--agent", "ppo-clip", env={"RL_TRUST_PRESETS": str(tmp_path)})
        assert res.returncode == 2, res.stderr
        assert f"{kind}.{name} names no {kind[4:]}" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_list_shows_every_preset():
    res = cli("list")
    assert res.returncode == 0
    for name in (
        "ppo",
        "ppo-paper",
        "ppo-fixed",
        "ppo-clip",
        "trpo",
        "npg",
        "ppo-zoo",
        "ppo-clip-zoo",
        "CartPole-v1",
        "Hopper-v5",
    ):
        assert any(line.split()[0] == name for line in res.stdout.splitlines() if line.strip())


def test_runs_never_overwrite(tmp_path: Path):
    args = [
        "train",
        "--steps",
        "64",
        "--set",
        "n_steps=64",
        "--set",
        "n_epochs=1",
        "--runs-root",
        str(tmp_path),
        "--no-progress",
    ]
    first, second = cli(*args), cli(*args)
    assert first.returncode == second.returncode == 0
    a, b = first.stdout.split()[-1], second.stdout.split()[-1]
    assert a != b and Path(a).is_dir() and Path(b).is_dir()
    res = cli("train", "--steps", "64", "--run-dir", a)
    assert res.returncode == 2 and "already exists" in res.stderr


BAD_INPUT = [
    (["--agent", "nope"], "unknown agent 'nope'"),
    (["--env", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
    (["--set", "n_stepz=64"], "unknown key 'n_stepz'"),
    (["--set", "cg_max_steps=3"], "does not apply to a ppo agent"),
    (["--set", "n_steps=abc"], "n_steps='abc' is not valid"),
    (["--set", "learning_rate=fast"], "learning_rate='fast' is not valid"),
    (["--steps", "-5"], "--steps '-5'"),
    (["--set", "steps=-5"], "steps=-5 is out of range"),
    (["--set", "batch_size=5000"], "batch_size=5000 is larger than the rollout"),
    (["--set", "kl_target=0"], "kl_target=0.0 is out of range"),
    (["--set", "gamma=1.5"], "gamma=1.5 is out of range"),
    (["--set", "kl_penalty=sometimes"], "kl_penalty='sometimes' is not valid"),
    (["--env", "rl_trust/TupleAction-v0"], "action space Tuple"),
    (["--set", "novalue"], "use --set key=value"),
    (["--agent", "ppo-zoo"], "uses the 'ppo-zoo' tuning, which env 'CartPole-v1' does not have"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args, message):
    res = cli("train", *args, "--runs-root", str(tmp_path))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0] and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())  # nothing created for a run that never started


def test_trpo_run_tags_layout_and_kl_constraint(trpo_run: Path):
    acc = events(trpo_run)
    tags = set(acc.Tags()["scalars"])
    assert not [t for t in KL_TAGS + TRPO_TAGS if t not in tags]
    charts = layout_of(acc)
    assert any("δ" in title for title in charts)
    accepted = scalars(acc, "trpo/accepted")
    kl = scalars(acc, "kl/forward_mean")
    assert sum(accepted.values()) >= len(accepted) // 2  # most steps accepted on CartPole
    for step, ok in accepted.items():
        if ok == 1.0:  # every accepted update kept the exact post-update KL within δ
            assert kl[step] <= 0.01 * (1 + 1e-6), (step, kl[step])
        else:
            assert kl[step] == 0.0
