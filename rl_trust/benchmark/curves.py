"""A trial's curves: the scalars the benchmark plots, read from the run's event files or
from the curves.csv kept beside them (matrix.py writes it when a trial ends; report.py
plots from it)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rl_trust import tags as T

CURVES = "curves.csv"  # a trial's plotted curves, kept where its event files are not
CURVE_TAGS = (
    T.ROLLOUT_EP_REW_MEAN,
    T.KL_FORWARD_MEAN,
    T.KL_TARGET,
    T.KL_BETA,
    T.TRAIN_APPROX_KL,
    T.SB3_KL_DIVERGENCE_LOSS,
)


def _events(run_dir: Path):
    """The run's event files, loaded once (every scalar kept)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    if tag not in acc.Tags()["scalars"]:
        return None
    points = acc.Scalars(tag)
    return np.array([p.step for p in points], float), np.array([p.value for p in points])


def read_curve(run_dir: Path, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A tag's (steps, values) from the run's event files, or from its curves.csv; None
    where the run has neither (or its folder is gone)."""
    if not Path(run_dir).is_dir():
        return None
    if (curve := _scalars(_events(run_dir), tag)) is not None:
        return curve
    if (Path(run_dir) / CURVES).exists():
        with (Path(run_dir) / CURVES).open() as f:
            rows = [r for r in csv.DictReader(f) if r["tag"] == tag]
        if rows:
            steps = np.array([float(r["step"]) for r in rows])
            return steps, np.array([float(r["value"]) for r in rows])
    return None


def export_curves(run_dir: Path) -> None:
    """curves.csv beside the event files: the benchmark's plots need only these tags, so a
    results folder can be kept (committed, shared) without the event files. The event files
    are read once for all the tags."""
    acc = _events(run_dir)
    with (Path(run_dir) / CURVES).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", "step", "value"])
        for tag in CURVE_TAGS:
            curve = _scalars(acc, tag)
            if curve is not None:
                writer.writerows((tag, int(x), repr(float(y))) for x, y in zip(*curve, strict=True))
