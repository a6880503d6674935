"""Shared fixtures. Tests run on CPU; a few need 8 simulated devices (set before jax import)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
