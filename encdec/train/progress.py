"""Human-readable training progress: steps/s, tokens/s, ETA."""
from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
  seconds = max(int(seconds), 0)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """Rates over the window since the previous report (excludes compile time of step 1)."""

  def __init__(self, start_step: int, num_steps: int):
    self.num_steps = num_steps
    self._step, self._time, self._tokens = start_step, time.perf_counter(), 0.0

  def add_tokens(self, tokens: float) -> None:
    self._tokens += tokens

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self._time, 1e-9)
    steps_per_s = (step - self._step) / elapsed
    rates = {"steps_per_s": steps_per_s, "tokens_per_s": self._tokens / elapsed,
             "eta_s": (self.num_steps - step) / max(steps_per_s, 1e-9)}
    self._step, self._time, self._tokens = step, now, 0.0
    return rates

  def restart(self, step: int) -> None:
    """Start a new window at `step` (after eval or checkpointing: not training time)."""
    self._step, self._time, self._tokens = step, time.perf_counter(), 0.0
