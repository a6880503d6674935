"""Building blocks: projections with logical axis names, embeddings, positions, MLP."""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Axes = tuple[str | None, ...]


def dense_general(features: int | Sequence[int], axes: Axes, dtype, *, axis=-1,
                  use_bias: bool = False, name: str | None = None) -> nn.DenseGeneral:
  """A DenseGeneral whose kernel carries logical axis names (input axes then output axes).

  Initialised with fan-in scaling over all contracted input axes (Flax flattens the kernel).
  """
  num_inputs = 1 if isinstance(axis, int) else len(axis)
  init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
  return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, dtype=dtype,
                         param_dtype=jnp.float32,
                         kernel_init=nn.with_logical_partitioning(init, axes),
                         bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                axes[num_inputs:]),
                         name=name)


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


ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}


class MLP(nn.Module):
  """Position-wise feed-forward: d_model -> d_ff -> act -> dropout -> d_model."""
  d_ff: int
  activation: str = "relu"
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    h = dense_general(self.d_ff, ("embed", "mlp"), self.dtype, use_bias=True, name="wi")(x)
    h = nn.Dropout(self.dropout_rate)(ACTIVATIONS[self.activation](h), deterministic=deterministic)
    return dense_general(x.shape[-1], ("mlp", "embed"), self.dtype, use_bias=True, name="wo")(h)
