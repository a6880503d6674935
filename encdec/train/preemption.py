"""Preemption: SIGTERM/SIGINT ask the loop to finish its step, checkpoint and exit cleanly."""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging


class Preempted(Exception):
  """Raised by the loop after it saved a checkpoint in answer to a signal."""


class PreemptionGuard:
  """Turns SIGTERM / SIGINT into a flag the loop polls between steps (a second SIGINT aborts).

  In multi-process runs every process polls the flag of all processes (one tiny all-gather),
  so they all stop, and save, at the same step.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._requested = False
    self._previous = {}

  def __enter__(self) -> "PreemptionGuard":
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    if self._requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self._requested = True
    logging.warning("received %s: saving a checkpoint after this step",
                    signal.Signals(signum).name)

  def should_stop(self) -> bool:
    if jax.process_count() == 1:
      return self._requested
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    flags = multihost_utils.process_allgather(np.array(self._requested))
    return bool(np.any(flags))
