"""Test helper: a model whose forward pass and decoding functions are compiled once per shape.

Op-by-op execution of scanned layers is slow, and a test module that builds one model per test
recompiles the same program many times; tests share one `Compiled` per configuration instead.
"""
import functools

import jax

from encdec import decoding


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
