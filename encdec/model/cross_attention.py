"""Cross-attention variants, chosen by name (`model.cross_attention`) from `CROSS_ATTENTION`.

Every variant is a Linen module built from the model config, with one call signature:

    y = Variant(config)(
            x,            # [B*G, T, d_model] decoder stream (G = beams per source, usually 1)
            encoded,      # [B, S, d_model] encoder output (None once the cache exists)
            mask,         # [B|1, 1, T|1, S] bool, True = may attend
            deterministic=..., decode=...)
    # y: [B*G, T, d_model], added to the residual stream by the decoder block

With `decode=True` a variant computes what it derives from `encoded` (keys/values) once per
source, into the 'cache' collection, the first time it is called, and reads it from there on
every later step. A new variant is a small module added to `CROSS_ATTENTION`; the property
tests in tests/test_cross_attention.py run over the whole registry.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import attention, layers


class MultiHeadCrossAttention(nn.Module):
  """Standard multi-head cross-attention (Vaswani et al., 2017, "Attention Is All You Need").

  Q = x W_Q, K = H_enc W_K, V = H_enc W_V, with `kv_heads()` K/V heads (here one per query head).
  """
  config: Any   # TransformerConfig

  def kv_heads(self) -> int:
    return self.config.num_heads

  def project_kv(self, encoded: jax.Array) -> jax.Array:
    """[B, S, d_model] --> [B, S, 2, Hk, D] (keys and values in one matmul)."""
    cfg = self.config
    return layers.dense_general((2, self.kv_heads(), cfg.heads_dim),
                                ("embed", "qkv", "kv_heads", "kv"), cfg.compute_dtype,
                                name="kv")(encoded)

  @nn.compact
  def __call__(self, x: jax.Array, encoded: jax.Array | None, mask: jax.Array, *,
               deterministic: bool, decode: bool = False) -> jax.Array:
    cfg = self.config
    query = layers.dense_general((cfg.num_heads, cfg.heads_dim), ("embed", "heads", "kv"),
                                 cfg.compute_dtype, name="query")(x)       # [B*G, T, H, D]
    if decode:  # K/V projected once per source, then read from the cache at every step
      kv = self.variable("cache", "cached_kv", self.project_kv, encoded).value
    else:
      kv = self.project_kv(encoded)                                         # [B, S, 2, Hk, D]
    rate = cfg.attention_dropout_rate
    dropout_rng = None if deterministic or rate == 0 else self.make_rng("dropout")
    out, weights = attention.grouped_attention(
        query, kv[:, :, 0], kv[:, :, 1], mask, dropout_rate=rate, deterministic=deterministic,
        dropout_rng=dropout_rng, return_weights=True)
    self.sow("intermediates", "weights", weights)  # [B, H, G*T, S]; kept only if asked for
    return layers.dense_general(x.shape[-1], ("heads", "kv", "embed"), cfg.compute_dtype,
                                axis=(-2, -1), name="out")(out)             # [B*G, T, d_model]


class MultiQueryCrossAttention(MultiHeadCrossAttention):
  """One K/V head shared by all query heads (Shazeer, 2019, "Fast Transformer Decoding: One
  Write-Head is All You Need"): the decode-time K/V cache shrinks by num_heads."""

  def kv_heads(self) -> int:
    return 1


class GroupedQueryCrossAttention(MultiHeadCrossAttention):
  """`model.cross_kv_heads` K/V heads, each shared by a group of query heads (Ainslie et al.,
  2023, "GQA: Training Generalized Multi-Query Transformer Models")."""

  def kv_heads(self) -> int:
    return self.config.cross_kv_heads or max(self.config.num_heads // 2, 1)


class GatedCrossAttention(nn.Module):
  """tanh(alpha) * MHA(x), alpha a learned scalar initialised to 0, so training starts from a
  decoder that ignores the source (Alayrac et al., 2022, Flamingo's gated xattn-dense)."""
  config: Any

  @nn.compact
  def __call__(self, x, encoded, mask, *, deterministic: bool, decode: bool = False):
    alpha = self.param("gate", nn.with_logical_partitioning(nn.initializers.zeros, ()), (),
                       jnp.float32)
    y = MultiHeadCrossAttention(self.config, name="attention")(
        x, encoded, mask, deterministic=deterministic, decode=decode)
    return jnp.tanh(alpha).astype(y.dtype) * y


class NoCrossAttention(nn.Module):
  """No cross-attention: a control in which the decoder cannot read the source."""
  config: Any

  def __call__(self, x, encoded, mask, *, deterministic: bool, decode: bool = False):
    return jnp.zeros_like(x)


CROSS_ATTENTION: dict[str, type[nn.Module]] = {
    "mha": MultiHeadCrossAttention,
    "mqa": MultiQueryCrossAttention,
    "gqa": GroupedQueryCrossAttention,
    "gated": GatedCrossAttention,
    "none": NoCrossAttention,
}


def get(name: str) -> type[nn.Module]:
  """The cross-attention class registered as `name`; a clear error for unknown names."""
  if name not in CROSS_ATTENTION:
    raise ValueError(f"unknown cross_attention {name!r}; valid: {', '.join(sorted(CROSS_ATTENTION))}")
  return CROSS_ATTENTION[name]
