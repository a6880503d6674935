"""Transparent huge pages for XLA:CPU's buffers: a faster CPU train step.

XLA:CPU allocates every step's temporary buffers with malloc (about 0.9 GB a step on the bench
config). glibc serves allocations that large from fresh mmap'd memory, so each step faults
them in 4 KiB at a time (1.7 M minor page faults in 8 bench steps). With glibc's
`glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) that memory is madvised for transparent huge
pages and faulted in 2 MiB at a time: 12x fewer faults, a 10-20% faster bench train step
(benchmarks/RESULTS.md). Numerics are unchanged.

glibc reads tunables only at process start, so `encdec` (and benchmarks/run.py) re-executes
itself once with the tunable added to GLIBC_TUNABLES. ENCDEC_HUGEPAGES=0 turns this off.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_supports_it() -> bool:
  name, version = platform.libc_ver()
  try:
    return name == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35)
  except ValueError:
    return False


def _thp_available() -> bool:
  """The kernel's THP mode is `always` or `madvise` (not `never`, nor missing)."""
  try:
    with open(THP_SETTING, encoding="ascii") as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def wanted(environ=os.environ) -> bool:
  """Whether to re-execute with the tunable: possible here, not set yet, not turned off."""
  return (sys.platform.startswith("linux") and environ.get("ENCDEC_HUGEPAGES", "1") != "0"
          and TUNABLE not in environ.get("GLIBC_TUNABLES", "") and _glibc_supports_it()
          and _thp_available())


def environment_with_tunable(environ=os.environ) -> dict[str, str]:
  """A copy of `environ` with TUNABLE appended to GLIBC_TUNABLES (':'-separated)."""
  env = dict(environ)
  env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), TUNABLE]))
  return env


def reexec_if_wanted() -> None:
  """Replace this process by the same command line with the tunable set (same pid, so
  signals and exit codes reach whoever started it). Call it first thing, before any work."""
  if wanted():
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environment_with_tunable())

