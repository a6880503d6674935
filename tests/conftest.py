"""Shared fixtures. Tests run on CPU; a few need 8 simulated devices (set before a backend starts).

The session shares one persistent compilation cache, also with the `encdec` processes it starts
(unless JAX_COMPILATION_CACHE_DIR is set): tests compile the same train steps and decoders
many times over, and reading a compiled program back is much faster than compiling it.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="encdec-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Compiling dominates the quick suite on CPU: XLA's backend optimisations off cut its time by a
# quarter and change no result beyond rounding. The slow suite keeps XLA's defaults: its long
# training runs are faster optimised (a run to 99%: 72 s against 100 s), though one run of the
# whole slow suite with these flags took 39 min against 47.5 min without (2026-12-01, 2-core
# Zen 3; not the same commit): to measure again before changing.
FAST_COMPILE_FLAGS = ["--xla_backend_optimization_level=0",
                      "--xla_llvm_disable_expensive_passes=true"]


def pytest_configure(config):
  """XLA's flags for this session (and the processes it starts), before any backend starts:
  8 simulated CPU devices, and a fast compile for the quick suite (`-m 'not slow'`)."""
  flags = ["--xla_force_host_platform_device_count=8"]
  if config.getoption("markexpr") == "not slow":
    flags += FAST_COMPILE_FLAGS
  os.environ.setdefault("XLA_FLAGS", " ".join(flags))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drop JAX's compiled executables after each test module. Every XLA CPU executable keeps
  memory mappings; a whole suite's worth in one process ran into the kernel's mapping limit
  (vm.max_map_count) and aborted inside a later compile."""
  yield
  jax.clear_caches()
  gc.collect()
