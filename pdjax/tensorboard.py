"""Live training curves in TensorBoard, without TensorFlow (tensorboardX; the `tensorboard` extra).

`fit(..., writer=pdjax.tensorboard.Writer("runs/x/tensorboard/teacher"))` writes, for each
epoch, every number of that epoch's line in `metrics.jsonl` (train loss and accuracy,
validation loss and accuracy, learning rate, the KD loss's parts and the teacher's accuracy,
seconds, images/s) as `epoch/<name>` at step = epoch, and the mean train loss of every
`log_every` steps as `step/train_loss` at step = global step. `metrics.jsonl` stays the record;
the event files are for watching. Only the first process writes (a multi-process run writes one
event file per stage and launch). Experiments take `--set log=tensorboard` and write one run per
stage under `<run dir>/tensorboard/` (`tensorboard --logdir <run dir>/tensorboard`).
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Mapping

from pdjax import parallel

LOGS = ("none", "tensorboard")


class Writer:
    """TensorBoard scalars of one training stage (see the module docstring).

    Raises:
      ImportError: tensorboardX is not installed (`pip install -e '.[tensorboard]'`).
    """

    def __init__(self, logdir: str | Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError("log=tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from err
        self.logdir = Path(logdir)
        self._writer = SummaryWriter(str(self.logdir)) if parallel.is_main_process() else None

    def epoch(self, epoch: int, record: Mapping[str, Any]) -> None:
        """One epoch's line of metrics.jsonl."""
        if self._writer is None:
            return
        for name, value in record.items():
            if name != "epoch" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                self._writer.add_scalar(f"epoch/{name}", float(value), epoch)
        self._writer.flush()

    def step(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars at a global train step (the train loss every `log_every` steps)."""
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"step/{name}", float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def for_stage(root: str | Path | None, stage: str) -> Writer | None:
    """The writer of `stage` under `root` (None: no logging)."""
    return None if root is None else Writer(Path(root) / stage)
