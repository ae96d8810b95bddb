"""`rl-trust board` as a user meets it: TensorBoard's HTTP API over a ppo and a trpo run,
clean stops, one-line errors, and (with Chromium) the dashboards as a browser draws them."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cdp import Chromium
from conftest import RL_TRUST, cli, events

from rl_trust.board import chromium, free_port, port_in_use, wait_until_up


@pytest.fixture(scope="module")
def runs_root(ppo_run: Path, trpo_run: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("board")
    shutil.copytree(ppo_run, root / "ppo")
    shutil.copytree(trpo_run, root / "trpo")
    return root


@pytest.fixture(scope="module")
def board(runs_root: Path):
    """The server on a free loopback port; stopped at the end whatever happens."""
    port = free_port()
    proc = subprocess.Popen(
        [RL_TRUST, "board", str(runs_root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/"
        wait_until_up(url)
        yield url, proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post(url: str, body: dict):
    req = urllib.request.Request(
        url,
        json.dumps(body).encode(),
        method="POST",
        headers={"X-XSRF-Protected": "1", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_scalars_plugin_serves_every_tag_of_each_run(board, runs_root):
    url = board[0]
    plugins = get(url + "data/plugins_listing")
    assert all(plugins[p]["enabled"] for p in ("scalars", "custom_scalars", "hparams"))
    tags = get(url + "data/plugin/scalars/tags")
    assert sorted(tags) == ["ppo", "trpo"]
    for run in ("ppo", "trpo"):
        written = set(events(runs_root / run).Tags()["scalars"])
        assert set(tags[run]) == written  # what the server serves is what the run wrote
    assert {"kl/forward_mean", "kl/reverse_mean", "kl/k3", "kl/beta"} <= set(tags["ppo"])
    trpo = {t for t in tags["trpo"] if t.startswith("trpo/")}
    assert {"trpo/accepted", "trpo/cg_iters", "trpo/linesearch_steps"} <= trpo
    assert not any(t.startswith("trpo/") for t in tags["ppo"])
    series = get(url + "data/plugin/scalars/scalars?run=trpo&tag=kl%2Fforward_mean")
    assert len(series) == 16 and all(len(point) == 3 for point in series)


def test_custom_scalars_plugin_serves_the_trust_region_layout(board):
    layout = get(board[0] + "data/plugin/custom_scalars/layout")
    (category,) = layout["category"]
    assert category["title"] == "Trust region"
    charts = {c["title"]: c for c in category["chart"]}
    margin = charts["KL(π_old‖π_new) against the target band"]["margin"]["series"][0]
    assert margin == {
        "value": "kl/forward_mean",
        "lower": "kl/target_low",
        "upper": "kl/target_high",
    }
    for title in (
        "β, the penalty coefficient",
        "KL estimators k1, k2, k3 beside the exact KL",
        "forward KL(p‖q) against reverse KL(q‖p)",
        "TRPO: post-update KL against δ",
    ):
        assert title in charts, sorted(charts)


def test_hparams_plugin_lists_both_runs_with_config_and_final_metrics(board):
    url = board[0] + "data/plugin/hparams/"
    experiment = post(url + "experiment", {"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"agent", "algo", "env_id", "n_steps", "target_kl", "learning_rate"} <= names
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"rollout/ep_rew_mean", "kl/forward_mean", "trpo/accepted"} <= metrics
    groups = post(
        url + "session_groups",
        {
            "experimentName": "",
            "startIndex": 0,
            "sliceSize": 10,
            "colParams": [],
            "allowedStatuses": [
                "STATUS_UNKNOWN",
                "STATUS_SUCCESS",
                "STATUS_FAILURE",
                "STATUS_RUNNING",
            ],
        },
    )["sessionGroups"]
    assert sorted(g["hparams"]["agent"] for g in groups) == ["ppo", "trpo"]
    for g in groups:
        values = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert "kl/forward_mean" in values and "rollout/ep_rew_mean" in values


def test_a_busy_port_and_a_folder_without_runs_are_one_line_errors(board, runs_root, tmp_path):
    port = board[2]
    assert port_in_use("127.0.0.1", port)
    res = cli("board", str(tmp_path), "--port", str(free_port()))
    assert res.returncode == 2 and "holds no runs" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = cli("board", str(runs_root), "--port", str(port))
    assert res.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_ctrl_c_stops_the_server(runs_root):
    port = free_port()
    proc = subprocess.Popen(
        [RL_TRUST, "board", str(runs_root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        with socket.socket() as s:  # nothing listens there any more
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if proc.poll() is None:
            proc.kill()


# The "Trust region" charts and the runs drawn in each: the ppo run logs no trpo/* tags and the
# trpo run no kl/beta, so those charts show one run; every other chart shows both.
CHARTS = {
    "KL(π_old‖π_new) against the target band": ["ppo", "trpo"],
    "KL estimators k1, k2, k3 beside the exact KL": ["ppo", "trpo"],
    "forward KL(p‖q) against reverse KL(q‖p)": ["ppo", "trpo"],
    "KL spread: mean, p95, max": ["ppo", "trpo"],
    "β, the penalty coefficient": ["ppo"],
    "KL in the band d_targ/1.5 … 1.5·d_targ: 1 in, 0 out": ["ppo"],
    "KL controller: log error and the P, I, D terms of log β": ["ppo"],
    "kl_rescale: the step's own KL and the fraction of it kept": ["ppo"],
    "TRPO: post-update KL against δ": ["ppo", "trpo"],
    "TRPO: expected against actual improvement": ["trpo"],
    "TRPO: accepted steps and line-search steps": ["trpo"],
}
# The HPARAMS rows: ppo's d_targ 0.01 without early stopping, trpo's δ 0.01 (no kl_target).
HPARAMS = {
    "ppo": {"kl_target": "0.010000", "target_kl": "None"},
    "trpo": {"kl_target": "", "target_kl": "0.010000"},
}


def in_page(call: str) -> str:
    """JavaScript that defines tests/dashboards.js's functions and gives the value of `call`."""
    functions = (Path(__file__).parent / "dashboards.js").read_text()
    return f"(() => {{\n{functions}\nreturn {call};\n}})()"


@pytest.mark.skipif(
    chromium() is None,
    reason="no chromium on PATH (Debian: apt-get install "
    "chromium); the dashboards are checked through the HTTP API above",
)
def test_dashboards_in_headless_chromium_show_each_chart_and_both_runs(board, tmp_path):
    """What a user sees: the pages as Chromium draws them, read from the rendered DOM (the
    screenshots stay in tmp_path, named in a failure's message)."""
    with Chromium(chromium()) as page:
        page.open(board[0] + "#custom_scalars")
        charts = page.wait_for(in_page("chartRuns()"), CHARTS)
        shot = page.screenshot(tmp_path / "custom_scalars.png")
        assert charts == CHARTS, f"the Trust region charts and their runs, as drawn in {shot}"
        page.open(board[0] + "#hparams")
        rows = page.wait_for(in_page("hparamsRows(['kl_target', 'target_kl'])"), HPARAMS)
        shot = page.screenshot(tmp_path / "hparams.png")
        assert rows == HPARAMS, f"the HPARAMS table's rows, as drawn in {shot}"
