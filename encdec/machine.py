"""The machine a number was measured on: every timing or speed encdec writes names it.

Reads /proc/cpuinfo and JAX's devices; imports JAX only inside `describe`.
"""
from __future__ import annotations

import os
import pathlib
import platform


def cpu_model() -> str:
  """/proc/cpuinfo's first "model name" (Linux), else platform.processor()."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def describe() -> str:
  """One line: OS, CPU model and count, JAX version and devices."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return (f"{platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs, JAX {jax.__version__} "
          f"on {len(devices)} × {devices[0].platform} ({devices[0].device_kind})")
