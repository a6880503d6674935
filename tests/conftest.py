"""Shared fixtures. Tests run on CPU; a few need 8 simulated devices (set before jax import).

The session shares one persistent compilation cache, also with the `encdec` processes it starts
(unless JAX_COMPILATION_CACHE_DIR is set): tests compile the same train steps and decoders
many times over, and reading a compiled program back is much faster than compiling it.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="encdec-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drop JAX's compiled executables after each test module. Every XLA CPU executable keeps
  memory mappings; a whole suite's worth in one process ran into the kernel's mapping limit
  (vm.max_map_count) and aborted inside a later compile."""
  yield
  jax.clear_caches()
  gc.collect()
