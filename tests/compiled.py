"""Test helpers for the quick suite's time: a model whose forward pass and decoding functions
are compiled once per shape, and which cross-attention variants the quick suite covers.

Op-by-op execution of scanned layers is slow, and a test module that builds one model per test
recompiles the same program many times; tests share one `Compiled` per configuration instead.
"""
import functools

import jax
import jax.numpy as jnp
import pytest

from encdec import decoding, model

# The variants per-variant tests run in the quick suite: the standard layout, one cache for
# target and source (merged) and a cache that does not hold the source (latent). The others
# (shared or fewer K/V heads, gates, windows, layouts) run in the slow suite.
CORE_VARIANTS = ("mha", "merged", "latent")


def structural_quick(quick: tuple[str, ...] = CORE_VARIANTS) -> list:
  """Every registered variant as a pytest parameter, those outside `quick` (by default the
  core ones) marked slow."""
  return [pytest.param(v, marks=() if v in quick else pytest.mark.slow)
          for v in sorted(model.CROSS_ATTENTION)]


class Compiled:
  """`module` with jitted `apply`, `init`, `init_cache` and `decode_step`; any other attribute
  (config, encode, ...) is the module's own."""

  def __init__(self, module):
    self.module = module
    self.apply = jax.jit(module.apply, static_argnames=("train", "method"))
    self.init = jax.jit(module.init)
    self.init_cache = jax.jit(functools.partial(decoding.init_cache, module),
                              static_argnames=("max_len", "beams"))
    self.decode_step = jax.jit(functools.partial(decoding.decode_step, module))

  def __getattr__(self, name):
    return getattr(self.module, name)


def cached_log_probs(m: Compiled, v, src, tgt, beams: int = 1):
  """Teacher-forced decoding of tgt [B*beams, T] one step at a time from the decode-mode cache
  (rows b*beams + g share source b): log-probabilities [B*beams, T, V]."""
  cache = m.init_cache(v, src, max_len=tgt.shape[1], beams=beams)
  steps = []
  for t in range(tgt.shape[1]):
    step, cache = m.decode_step(v, cache, src, tgt[:, t], jnp.array(t))
    steps.append(step)
  return jnp.stack(steps, axis=1)
