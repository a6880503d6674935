"""The machine a number was measured on: every timing or speed encdec writes names it.

Reads /proc/cpuinfo and JAX's devices; imports JAX only inside `describe`.
"""
from __future__ import annotations

import os
import pathlib
import platform
from typing import Any


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


# ------------------------------------------------------------------ nominal float32 peak
# fp32 FMA lanes one core retires per cycle, by microarchitecture: FMA units x lanes per unit.
# AMD Zen 2-4 have two 256-bit FMA pipes (Zen 4 runs AVX-512 as two 256-bit halves); Zen 1
# two 128-bit pipes; Zen 5 two 512-bit pipes. Intel cores with AVX-512 are taken to have two
# 512-bit FMA units (Xeon Gold/Platinum; Silver/Bronze parts have one: the peak is then 2x high),
# with AVX2 two 256-bit units.
_AMD_FMA_LANES = ((0x17, 0x00, 8), (0x17, 0x30, 16), (0x19, 0x00, 16), (0x1A, 0x00, 32))


def cpu_info() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
  fields: dict[str, str] = {}
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return fields
  for line in text.split("\n\n")[0].splitlines():
    key, sep, value = line.partition(":")
    if sep:
      fields[key.strip()] = value.strip()
  return fields


def fma_lanes_per_cycle(info: dict[str, str]) -> tuple[int, str]:
  """(fp32 FMA lanes per core per cycle, why) from the vendor, family, model and ISA flags."""
  flags = set(info.get("flags", "").split())
  vendor = info.get("vendor_id", "")
  if vendor == "AuthenticAMD" and "cpu family" in info:
    family, model = int(info["cpu family"]), int(info.get("model", "0"))
    lanes = 0
    for fam, first_model, value in _AMD_FMA_LANES:
      if family > fam or (family == fam and model >= first_model):
        lanes = value
    if lanes:
      return lanes, f"AMD family {family:#x} model {model:#x}: 2 FMA pipes x {lanes // 2} lanes"
  if "avx512f" in flags:
    return 32, "AVX-512: 2 FMA units x 16 lanes (assumed; 1-unit parts reach half)"
  if "fma" in flags and "avx2" in flags:
    return 16, "AVX2: 2 FMA units x 8 lanes"
  if "avx" in flags:
    return 16, "AVX without FMA: one 8-lane add and one 8-lane multiply per cycle"
  return 8, "SSE: one 4-lane add and one 4-lane multiply per cycle"


def cpu_isa() -> dict[str, Any]:
  """Vendor, family/model (which microarchitecture) and the vector/matrix extensions a GEMM
  library may use: what decides which kernels XLA's and PyTorch's libraries pick."""
  info = cpu_info()
  flags = set(info.get("flags", "").split())
  wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
  return {"cpu_vendor": info.get("vendor_id"),
          "cpu_family_model": (f"{int(info['cpu family']):#x}/{int(info.get('model', 0)):#x}"
                               if "cpu family" in info else None),
          "cpu_isa": ",".join(f for f in wanted if f in flags)}


def nominal_peak() -> dict[str, Any]:
  """The CPU's float32 peak from its datasheet arithmetic: physical cores this process may use
  x fp32 FMA lanes per cycle x 2 FLOPs x the clock /proc/cpuinfo reports (the nominal/TSC
  clock under a hypervisor; turbo can run above it, so a measured GEMM may exceed this)."""
  info = cpu_info()
  if not info or "cpu MHz" not in info:
    return {"nominal_peak_flops": None, "nominal_peak_derivation": "no /proc/cpuinfo clock"}
  logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  siblings, cores = int(info.get("siblings", 1)), int(info.get("cpu cores", 1))
  threads_per_core = max(siblings // max(cores, 1), 1)
  physical = max(logical // threads_per_core, 1)
  lanes, why = fma_lanes_per_cycle(info)
  ghz = float(info["cpu MHz"]) / 1000
  flops = physical * lanes * 2 * ghz * 1e9
  return {"nominal_peak_flops": flops,
          "nominal_peak_derivation": (f"{physical} physical cores ({logical} logical, "
                                      f"{threads_per_core} per core) x {lanes} fp32 FMA lanes "
                                      f"({why}) x 2 FLOPs x {ghz:.2f} GHz (/proc/cpuinfo)")}
