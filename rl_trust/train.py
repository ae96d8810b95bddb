"""A run from start to end, as `rl-trust train` and `resume` drive it: the env checked and the
run folder claimed (`prepare`), then, with the folder locked and SIGINT / SIGTERM caught,
the trainer (rl_trust/trainer.py) built, trained and closed (`run`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rl_trust import config, runs
from rl_trust.config import RunConfig
from rl_trust.envs import make_env, pool
from rl_trust.errors import UserError
from rl_trust.runs import RunFolder
from rl_trust.trainer import Trainer


def prepare(cfg: RunConfig, run_dir: Path | None, runs_root: Path) -> RunFolder:
    """Check that the env exists, its spaces are supported and its first observation fits
    its space, then claim the run folder (never an existing one) and write the resolved
    config.yaml into it. Nothing is created when a check fails."""
    if run_dir is not None:
        runs.check_new(run_dir)
    if cfg.env.vectorization == "envpool":
        pool.check(cfg.env)
    env = make_env(cfg.env)
    try:
        runs.probe(env, cfg, repr(cfg.env.env_id))
    finally:
        env.close()
    return RunFolder.create(cfg, run_dir, runs_root)


def load_run_config(run_dir: Path, steps: int | None = None) -> RunConfig:
    """The config of an existing run, with a new step total for `resume` (written to its
    config.yaml by `run`, once the checkpoint it resumes from has been verified)."""
    cfg = config.read_run(run_dir)
    return cfg if steps is None else runs.with_steps(cfg, steps)


def stops(answer) -> bool:
    """Whether a callback's answer stops training: any falsy value but None (which a
    function without a return statement gives) stops: False, 0, numpy's False_."""
    if answer is None:
        return False
    try:
        return not bool(answer)
    except (TypeError, ValueError):  # (an array of several values has no truth value)
        raise UserError(
            f"the callback returned {runs._brief(answer)}: return a bool (False stops)"
        ) from None


@contextmanager
def signals_caught() -> Iterator[list[int]]:
    """SIGINT and SIGTERM appended to the list it gives (for the trainer to stop at its next
    step) instead of ending the process; the handlers before are back on the way out."""
    stop: list[int] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum, _frame):
        stop.append(signum)

    for s in handlers:
        signal.signal(s, request_stop)
    try:
        yield stop
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def run(
    cfg: RunConfig,
    run_dir: Path | RunFolder,
    *,
    resume: bool = False,
    progress: bool = True,
    from_step: int | None = None,
) -> dict:
    """Train `cfg` into `run_dir` (or continue the run there from its newest verified
    checkpoint, or the one at `from_step`); returns the summary. The run folder is locked
    against a second writer throughout; SIGINT / SIGTERM stop it with a checkpoint
    (trainer.Interrupted)."""
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    with signals_caught() as stop, folder.lock():
        torch.set_num_threads(cfg.run.torch_threads)
        path, state = folder.resume_point(cfg, from_step) if resume else (None, None)
        trainer = Trainer(cfg, None, folder.path, state, source=path)
        with trainer:
            if resume:
                folder.continue_from(trainer.learner.step, cfg)
            return trainer.learn(cfg.run.steps, stop, progress)
