"""Metric logging: WORKDIR/metrics.jsonl (one JSON object per line) and TensorBoard events."""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping

import numpy as np


def _scalar(value: Any) -> Any:
  value = np.asarray(value).item() if not isinstance(value, (str, int, float)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf
  return value


class MetricWriter:
  """Appends {"step": N, "train/loss": ..., ...} lines; mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)):
          self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  """All rows of WORKDIR/metrics.jsonl."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
