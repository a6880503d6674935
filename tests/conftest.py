"""Shared fixtures. Tests run on CPU; a few need 8 simulated devices (set before jax import)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
