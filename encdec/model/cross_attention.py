"""Cross-attention variants, chosen by name from `CROSS_ATTENTION`.

Every variant is a Linen module with the same call signature:

    y = Variant(num_heads=..., head_dim=..., dropout_rate=..., dtype=...)(
            x,            # [B*G, T, d_model] decoder stream (G = beams per source, usually 1)
            encoded,      # [B, S, d_model] encoder output (may be None once the cache exists)
            mask,         # [B|1, 1, T|1, S] bool, True = may attend
            deterministic=..., decode=...)
    # y: [B*G, T, d_model]

With `decode=True` a variant computes whatever it derives from `encoded` (keys/values) once,
into the 'cache' collection, the first time it is called for a source, and reads it from there
on every later step. Register a new variant by adding it to `CROSS_ATTENTION`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import attention, layers


class MultiHeadCrossAttention(nn.Module):
  """Standard multi-head cross-attention (Vaswani et al., 2017, "Attention Is All You Need").

  Q = x W_Q, K = H_enc W_K, V = H_enc W_V, one K/V head per query head.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def project_kv(self, encoded: jax.Array) -> jax.Array:
    """[B, S, d_model] --> [B, S, 2, H, D] (keys and values in one matmul)."""
    return layers.dense_general((2, self.num_heads, self.head_dim), ("embed", "qkv", "heads", "kv"),
                                self.dtype, name="kv")(encoded)

  @nn.compact
  def __call__(self, x: jax.Array, encoded: jax.Array | None, mask: jax.Array, *,
               deterministic: bool, decode: bool = False) -> jax.Array:
    query = layers.dense_general((self.num_heads, self.head_dim), ("embed", "heads", "kv"),
                                 self.dtype, name="query")(x)              # [B*G, T, H, D]
    if decode:  # K/V projected once per source, then read from the cache at every step
      kv = self.variable("cache", "cached_kv", self.project_kv, encoded).value
    else:
      kv = self.project_kv(encoded)                                         # [B, S, 2, H, D]
    dropout_rng = None if deterministic or self.dropout_rate == 0 else self.make_rng("dropout")
    out, weights = attention.grouped_attention(
        query, kv[:, :, 0], kv[:, :, 1], mask, dropout_rate=self.dropout_rate,
        deterministic=deterministic, dropout_rng=dropout_rng, return_weights=True)
    self.sow("intermediates", "weights", weights)  # [B, H, G*T, S]; kept only if asked for
    return layers.dense_general(x.shape[-1], ("heads", "kv", "embed"), self.dtype, axis=(-2, -1),
                                name="out")(out)                            # [B*G, T, d_model]


CROSS_ATTENTION: dict[str, type[nn.Module]] = {
    "mha": MultiHeadCrossAttention,
}


def get(name: str) -> type[nn.Module]:
  """The cross-attention class registered as `name`; a clear error for unknown names."""
  if name not in CROSS_ATTENTION:
    raise ValueError(f"unknown cross_attention {name!r}; valid: {', '.join(sorted(CROSS_ATTENTION))}")
  return CROSS_ATTENTION[name]
