"""TensorBoard output of a run: scalars at the env-step count, the KL histogram, the
"Trust region" custom-scalars layout and the run's hparams entry, all in the run's own
event file."""

from __future__ import annotations

from pathlib import Path

from tensorboard.plugins.hparams import summary_v2 as hp
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from rl_trust import tags as T
from rl_trust.errors import UserError

# The run's final values of these tags are its hparams metrics.
HPARAM_METRICS = (T.ROLLOUT_EP_REW_MEAN, T.KL_FORWARD_MEAN, T.TIME_FPS)


def layout(agent_charts: dict[str, list], masked: bool = False) -> dict:
    """The "Trust region" dashboard (custom scalars): the KL charts every agent has, then the
    agent's own (its class's `charts()`), then, where the run masks invalid actions, what
    masking saves. Multiline tags are regular expressions (tags.exact)."""
    charts = {
        "KL(π_old‖π_new) against the target band": [
            "Margin",
            [T.KL_FORWARD_MEAN, T.KL_TARGET_LOW, T.KL_TARGET_HIGH],
        ],
        "KL estimators k1, k2, k3 beside the exact KL": [
            "Multiline",
            [T.exact(T.KL_FORWARD_MEAN, T.KL_K1, T.KL_K2, T.KL_K3)],
        ],
        "forward KL(p‖q) against reverse KL(q‖p)": [
            "Multiline",
            [T.exact(T.KL_FORWARD_MEAN, T.KL_REVERSE_MEAN)],
        ],
        "KL spread: mean, p95, max": [
            "Multiline",
            [T.exact(T.KL_FORWARD_MEAN, T.KL_FORWARD_P95, T.KL_FORWARD_MAX)],
        ],
    }
    charts.update(agent_charts)
    if masked:
        charts["invalid actions: the unmasked policy's probability of one"] = [
            "Multiline",
            [T.exact(T.ROLLOUT_INVALID_ACTION_SHARE)],
        ]
    return {"Trust region": charts}


def hparams_of(agent: str, keys: dict) -> dict[str, bool | int | float | str]:
    """The hparams entry: the agent's name and every config key (`RunConfig.flat`), a value
    TensorBoard has no type for as its text."""
    out: dict[str, bool | int | float | str] = {"agent": agent}
    for key, value in keys.items():
        out[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


class RunWriter:
    """The run's event file. A new run's starts with the dashboard (`layout`) and the hparams
    entry (`hparams_of`); a resumed run's drops what was logged after its checkpoint (`purge_step`:
    TensorBoard purges steps ≥ it)."""

    def __init__(
        self,
        run_dir: Path,
        hparams: dict,
        dashboard: dict,
        histograms: bool = False,
        purge_step: int | None = None,
    ):
        self.histograms = histograms
        try:
            self.writer = SummaryWriter(str(run_dir), purge_step=purge_step, flush_secs=30)
            if purge_step is None:
                self.writer.add_custom_scalars(dashboard)
                self.writer._get_file_writer().add_summary(hp.hparams_pb(hparams))
        except OSError as e:
            why = e.strerror or e
            raise UserError(f"cannot write TensorBoard events in {run_dir}: {why}") from None

    def write(self, metrics: dict[str, float | Tensor], step: int) -> None:
        for tag, value in metrics.items():
            if isinstance(value, Tensor):
                if self.histograms:
                    self.writer.add_histogram(tag, value, step)
            else:
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
