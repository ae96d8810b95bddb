"""TensorBoard tags: one list of them (rl_trust/tags.py), which every run's event file and
every dashboard chart keep to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import events
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata

from rl_trust import tags as T


def layout_of(acc) -> layout_pb2.Layout:
    tensor = acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0]
    layout = layout_pb2.Layout()
    layout.ParseFromString(tensor.tensor_proto.string_val[0])
    return layout


@pytest.mark.parametrize("fixture", ["ppo_run", "trpo_run"])
def test_a_run_writes_only_listed_tags_and_every_chart_shows_some(fixture, request):
    acc = events(Path(request.getfixturevalue(fixture)))
    written = set(acc.Tags()["scalars"]) | set(acc.Tags()["histograms"])
    assert written - set(T.MEANINGS) == set()
    assert {T.KL_FORWARD_MEAN, T.KL_TARGET_HIGH, T.ROLLOUT_EP_REW_MEAN} <= written
    (category,) = layout_of(acc).category
    for chart in category.chart:
        if chart.HasField("multiline"):
            for pattern in chart.multiline.tag:
                listed = [t for t in T.MEANINGS if re.search(pattern, t)]
                assert listed, (chart.title, pattern)  # a pattern of tags that exist
        else:
            for series in chart.margin.series:
                assert {series.value, series.lower, series.upper} <= written, chart.title


def test_exact_matches_its_tags_and_no_other():
    pattern = T.exact(T.KL_BETA, T.KL_BETA_MAX)
    assert [t for t in T.MEANINGS if re.search(pattern, t)] == [T.KL_BETA, T.KL_BETA_MAX]


def test_every_tag_has_a_meaning_and_a_namespace():
    for name, meaning in T.MEANINGS.items():
        assert re.fullmatch(r"(kl|trpo|train|rollout|time|eval)/\w+", name), name
        assert meaning.strip(), name
