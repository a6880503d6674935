"""Building blocks: projections with logical axis names, embeddings, positions, MLP."""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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
  step (a beam-4 step: 20.6 -> 18.3 ms), where there is no backward pass.
  """
  num: int
  features: tuple[int, ...]
  axes: Axes
  dtype: jnp.dtype = jnp.float32
  one_matmul: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    flat = lambda key, shape, dtype: FAN_IN_INIT(key, (shape[0], math.prod(shape[1:])),
                                                 dtype).reshape(shape)
    kernel = self.param("kernel", nn.with_logical_partitioning(flat, self.axes),
                        (x.shape[-1], self.num, *self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.one_matmul:                                        # [..., num, *features], split
      return tuple(jnp.unstack(jnp.tensordot(x, kernel, axes=1), axis=x.ndim - 1))
    return tuple(jnp.tensordot(x, kernel[:, i], axes=1) for i in range(self.num))


def norm(dtype, name: str | None = None) -> nn.LayerNorm:
  return nn.LayerNorm(dtype=dtype, param_dtype=jnp.float32, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def embed(vocab_size: int, d_model: int, dtype, name: str) -> nn.Embed:
  """Token embedding [vocab, d_model]; also the tied output projection via `.attend`."""
  init = nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed"))
  return nn.Embed(vocab_size, d_model, dtype=dtype, param_dtype=jnp.float32,
                  embedding_init=init, name=name)


def sinusoidal_positions(positions: jax.Array, d_model: int) -> jax.Array:
  """[B, T] int positions --> [B, T, d_model] (Vaswani et al. 2017, sin | cos halves)."""
  half = d_model // 2
  inv_freq = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / max(half - 1, 1))
  angles = positions[..., None].astype(jnp.float32) * inv_freq                  # [B, T, half]
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(enc, [(0, 0), (0, 0), (0, d_model - 2 * half)])


class PositionEncoding(nn.Module):
  """Adds position information to token embeddings: 'sinusoidal' or 'learned'."""
  kind: str
  max_len: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    d_model = x.shape[-1]
    if self.kind == "sinusoidal":
      return x + sinusoidal_positions(positions, d_model).astype(x.dtype)
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed"))
    table = self.param("table", init, (self.max_len, d_model), jnp.float32)
    return x + jnp.take(table, positions, axis=0).astype(x.dtype)




class MLP(nn.Module):
  """Position-wise feed-forward: d_model -> d_ff -> act -> dropout -> d_model."""
  d_ff: int
  activation: str = "relu"
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    h = dense_general(self.d_ff, ("embed", "mlp"), self.dtype, use_bias=True, name="wi")(x)
    h = nn.Dropout(self.dropout_rate)(getattr(jax.nn, self.activation)(h), deterministic=deterministic)
    return dense_general(x.shape[-1], ("mlp", "embed"), self.dtype, use_bias=True, name="wo")(h)
