"""Metric logging: WORKDIR/metrics.jsonl (one JSON object per line) and TensorBoard events."""
from __future__ import annotations

import errno
import json
import math
import pathlib
import time
from typing import Any, Mapping

import numpy as np


def _scalar(value: Any) -> Any:
  value = np.asarray(value).item() if not isinstance(value, (str, int, float)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf
  return value


class MetricWriteError(OSError):
  """Metrics could not be written (e.g. a full disk): a one-line message for the CLI."""


class TensorBoardWriter:
  """Scalars as TensorBoard events, written and flushed in the calling thread.

  (tensorboardX's SummaryWriter writes from a thread behind a bounded queue: when a full disk
  kills that thread, the next add_scalar blocks forever. Here the error reaches the caller.)
  """

  def __init__(self, logdir: pathlib.Path):
    from tensorboardX.event_file_writer import EventsWriter  # pylint: disable=import-outside-toplevel
    logdir.mkdir(parents=True, exist_ok=True)
    self._events = EventsWriter(str(logdir / "events"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboardX import summary  # pylint: disable=import-outside-toplevel
    from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
    for key, value in scalars.items():
      self._events.write_event(event_pb2.Event(wall_time=time.time(), step=step,
                                               summary=summary.scalar(key, value)))
    self._events.flush()

  def close(self) -> None:
    self._events.close()


class MetricWriter:
  """Appends {"step": N, "train/loss": ..., ...} lines; mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = TensorBoardWriter(pathlib.Path(workdir) / "tensorboard") if tensorboard else None

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    try:
      with self.path.open("a") as f:
        f.write(json.dumps(row) + "\n")
      if self._tb is not None:
        self._tb.write(int(step), {k: v for k, v in row.items()
                                   if k != "step" and isinstance(v, (int, float))})
    except OSError as e:
      hint = ("; free space and rerun the same command to resume from the newest checkpoint"
              if e.errno == errno.ENOSPC else "")
      raise MetricWriteError(f"cannot write metrics in {self.path.parent}: "
                             f"{(e.strerror or str(e)).lower()}{hint}") from e

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  """All rows of WORKDIR/metrics.jsonl."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
