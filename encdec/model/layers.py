"""Building blocks: projections with logical axis names, norms, embeddings, MLPs.

(Position schemes are in encdec/model/positions.py.)
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import schema

Axes = tuple[str | None, ...]
# Projection kernels: fan-in scaling over the contracted input axes (Flax flattens the kernel).
FAN_IN_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def dense_general(features: int | Sequence[int], axes: Axes, dtype, *, axis=-1,
                  use_bias: bool = False, name: str | None = None) -> nn.DenseGeneral:
  """A DenseGeneral whose kernel carries logical axis names (input axes then output axes).

  Initialised with fan-in scaling over all contracted input axes (Flax flattens the kernel).
  """
  num_inputs = 1 if isinstance(axis, int) else len(axis)
  return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, dtype=dtype,
                         param_dtype=jnp.float32,
                         kernel_init=nn.with_logical_partitioning(FAN_IN_INIT, axes),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                axes[num_inputs:]),
                         name=name)


class StackedProjection(nn.Module):
  """`num` projections of the same input, their kernels stacked in one parameter.

  x [..., d] --> a tuple of `num` arrays [..., *features]. The kernel [d, num, *features] is
  named `axes` and initialised exactly like dense_general's (fan-in over d), so it is the
  parameter a DenseGeneral with features (num, *features) would hold. It is applied as `num`
  matmuls, not one wide matmul sliced afterwards: in the backward pass the sliced version
  assembles the output gradient by padding, and XLA:CPU then emits the kernel gradient
  transposed, so the optimizer reads it strided several times. Separately, each gradient comes
  out in the kernel's layout (the bench train step is 2-4% faster; benchmarks/RESULTS.md).
  `one_matmul=True` applies it as one wide matmul instead: faster for the few rows of a decoding
  step (a beam-4 step: 20.6 -> 18.3 ms), where there is no backward pass. `use_bias`: a 'bias'
  [num, *features] too (zeros at init).
  """
  num: int
  features: tuple[int, ...]
  axes: Axes
  dtype: jnp.dtype = jnp.float32
  one_matmul: bool = False
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    flat = lambda key, shape, dtype: FAN_IN_INIT(key, (shape[0], math.prod(shape[1:])),
                                                 dtype).reshape(shape)
    kernel = self.param("kernel", nn.with_logical_partitioning(flat, self.axes),
                        (x.shape[-1], self.num, *self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.one_matmul:                                        # [..., num, *features], split
      outputs = jnp.unstack(jnp.tensordot(x, kernel, axes=1), axis=x.ndim - 1)
    else:
      outputs = [jnp.tensordot(x, kernel[:, i], axes=1) for i in range(self.num)]
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             self.axes[1:]),
                        (self.num, *self.features), jnp.float32).astype(self.dtype)
      outputs = [out + bias[i] for i, out in enumerate(outputs)]
    return tuple(outputs)


def norm(dtype, kind: str = "layernorm", name: str | None = None,
         epsilon: float = 1e-6) -> nn.Module:
  """`kind` (schema.NORM_TYPES): "layernorm" (Ba et al. 2016: 'scale' and 'bias') or "rmsnorm"
  (Zhang & Sennrich 2019, as T5: x / rms(x), a 'scale' only, no mean subtracted); `epsilon` is
  added to the variance (model.norm_epsilon)."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
                      scale_init=scale_init, name=name)
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, name=name,
                      scale_init=scale_init,
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def activation(name: str):
  """The function of an activation name (schema.ACTIVATIONS): jax.nn.<name>, except
  "gelu_exact", the erf GELU (jax.nn.gelu's default is the tanh approximation)."""
  if name == "gelu_exact":
    return functools.partial(jax.nn.gelu, approximate=False)
  return getattr(jax.nn, name)


def embed(vocab_size: int, d_model: int, dtype, name: str) -> nn.Embed:
  """Token embedding [vocab, d_model]; also the tied output projection via `.attend`."""
  init = nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed"))
  return nn.Embed(vocab_size, d_model, dtype=dtype, param_dtype=jnp.float32,
                  embedding_init=init, name=name)


def dropout_active(rate, deterministic: bool) -> bool:
  """Whether dropout at `rate` draws a mask: not when deterministic, nor at a Python rate of 0
  (which costs nothing). A traced rate (a batched run's, encdec/train/batched.py) always
  draws one; at 0 it keeps every value unchanged."""
  return not deterministic and not (isinstance(rate, (int, float)) and rate == 0)


def dropout(x: jax.Array, rate, rng: jax.Array) -> jax.Array:
  """Inverted dropout: each value kept with probability 1 - rate and scaled by 1 / (1 - rate).
  `rate` is a Python number or a traced float32 scalar."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class Dropout(nn.Module):
  """nn.Dropout (same name, so the same 'dropout' keys and masks) whose rate may be traced."""
  rate: float | jax.Array

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if not dropout_active(self.rate, deterministic):
      return x
    return dropout(x, self.rate, self.make_rng("dropout"))


class MLP(nn.Module):
  """Position-wise feed-forward: d_model -> d_ff -> act -> dropout -> d_model.

  kind "dense": act(x W_i) with kernel 'wi'. Gated (GLU variants, Shazeer 2020, "GLU Variants
  Improve Transformer"; schema.GATED_MLP_ACTIVATIONS): act(x W_0) * (x W_1) with kernels
  'wi_0' (the gate) and 'wi_1' (as T5 v1.1 names them), the activation set by the kind.
  """
  d_ff: int
  activation: str = "relu"
  dropout_rate: float | jax.Array = 0.0
  dtype: jnp.dtype = jnp.float32
  kind: str = "dense"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    project_in = lambda name: dense_general(self.d_ff, ("embed", "mlp"), self.dtype,
                                            use_bias=self.use_bias, name=name)(x)  # [..., d_ff]
    if self.kind == "dense":
      h = activation(self.activation)(project_in("wi"))
    else:
      gate = activation(schema.GATED_MLP_ACTIVATIONS[self.kind])
      h = gate(project_in("wi_0")) * project_in("wi_1")
    h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense_general(x.shape[-1], ("mlp", "embed"), self.dtype, use_bias=self.use_bias,
                         name="wo")(h)
