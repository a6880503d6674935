"""Attention masks and multi-head self-attention (with an autoregressive cache).

All masks are boolean, True = may attend, shaped [batch, 1 (heads), q_len, kv_len]
(any of the leading dims may be 1 and broadcast). They are built here and nowhere else.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import layers

PAD = 0


# ----------------------------------------------------------------------------- masks
def key_padding_mask(kv_valid: jax.Array) -> jax.Array:
  """[B, S] bool --> [B, 1, 1, S]: every query may see every real key."""
  return kv_valid[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
  """--> [1, 1, T, T]: query t sees keys 0..t."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def segment_mask(q_segments: jax.Array, kv_segments: jax.Array) -> jax.Array:
  """[B, T], [B, S] segment ids (0 = padding) --> [B, 1, T, S]: same packed example only."""
  same = q_segments[:, :, None] == kv_segments[:, None, :]
  return (same & (kv_segments[:, None, :] > 0))[:, None]


def encoder_mask(src: jax.Array, src_segment_ids: jax.Array | None) -> jax.Array:
  """Bidirectional encoder self-attention: real keys (of the same segment when packed)."""
  if src_segment_ids is not None:
    return segment_mask(src_segment_ids, src_segment_ids)
  return key_padding_mask(src != PAD)


def decoder_mask(tgt_len: int, tgt_segment_ids: jax.Array | None) -> jax.Array:
  """Causal decoder self-attention. Future keys (and so all trailing padding) are hidden."""
  mask = causal_mask(tgt_len)
  if tgt_segment_ids is not None:
    mask = mask & segment_mask(tgt_segment_ids, tgt_segment_ids)
  return mask


def cross_mask(src: jax.Array, src_segment_ids: jax.Array | None,
               tgt_segment_ids: jax.Array | None) -> jax.Array:
  """Decoder queries over encoder keys: real source tokens (of the same segment when packed)."""
  if src_segment_ids is not None and tgt_segment_ids is not None:
    return segment_mask(tgt_segment_ids, src_segment_ids)
  return key_padding_mask(src != PAD)


def cache_mask(cache_index: jax.Array, cache_length: int) -> jax.Array:
  """Decoding step at position `cache_index` --> [1, 1, 1, L]: keys 0..index."""
  return (jnp.arange(cache_length) <= cache_index)[None, None, None, :]


# ------------------------------------------------------------------------ attention
def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                          *, dropout_rate: float = 0.0, deterministic: bool = True,
                          dropout_rng: jax.Array | None = None,
                          return_weights: bool = False):
  """softmax(QK^T/sqrt(d) + M) V, with K/V heads shared by groups of query heads.

  query [B, T, H, D]; key, value [B, S, Hk, D] with Hk dividing H (Hk = H: multi-head,
  Hk = 1: multi-query, else grouped-query); mask [B|1, 1|H, T|1, S] bool.
  Returns [B, T, H, D] (and the weights [B, H, T, S] if asked).
  """
  batch, length, heads, depth = query.shape
  kv_heads = key.shape[2]
  query = query / jnp.sqrt(depth).astype(query.dtype)
  query = query.reshape(batch, length, kv_heads, heads // kv_heads, depth)   # [B, T, Hk, R, D]
  logits = jnp.einsum("btgrd,bsgd->bgrts", query, key).astype(jnp.float32)
  logits = logits.reshape(batch, heads, length, key.shape[1])                # [B, H, T, S]
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(value.dtype)
  grouped = weights.reshape(batch, kv_heads, heads // kv_heads, length, key.shape[1])
  out = jnp.einsum("bgrts,bsgd->btgrd", grouped, value)                      # [B, T, Hk, R, D]
  out = out.reshape(batch, length, heads, depth)                             # [B, T, H, D]
  return (out, weights) if return_weights else out


def grouped_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                      **kwargs):
  """Attention when the query batch is a multiple of the key batch (beams share a source).

  query [B*G, T, H, D] with key/value [B, S, H, D] and mask [B|1, 1, T|1, S]: the G query rows
  of one source are folded into its time axis, so K/V are never copied per beam.
  """
  batch, groups = key.shape[0], query.shape[0] // key.shape[0]
  if groups == 1:
    return dot_product_attention(query, key, value, mask, **kwargs)
  _, t, h, d = query.shape
  query = query.reshape(batch, groups * t, h, d)                         # [B, G*T, H, D]
  if mask.shape[2] != 1:
    mask = jnp.tile(mask, (1, 1, groups, 1))                             # [B, 1, G*T, S]
  out = dot_product_attention(query, key, value, mask, **kwargs)
  if kwargs.get("return_weights"):
    out, weights = out
    return out.reshape(batch * groups, t, h, d), weights
  return out.reshape(batch * groups, t, h, d)                            # [B*G, T, H, D]


class SelfAttention(nn.Module):
  """Multi-head self-attention; with `decode=True` it keeps a K/V cache of `cache_length`.

  In decode mode the first call (when the cache does not exist yet) only creates the empty
  cache; every later call takes one new token per row and attends to all cached ones.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, *, deterministic: bool,
               decode: bool = False, cache_length: int | None = None) -> jax.Array:
    qkv = layers.dense_general((3, self.num_heads, self.head_dim), ("embed", "qkv", "heads", "kv"),
                               self.dtype, name="qkv")(x)                # [B, T, 3, H, D]
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if decode:
      key, value, mask = self._update_cache(key, value, cache_length)
    dropout_rng = None if deterministic or self.dropout_rate == 0 else self.make_rng("dropout")
    out = dot_product_attention(query, key, value, mask, dropout_rate=self.dropout_rate,
                                deterministic=deterministic, dropout_rng=dropout_rng)
    return layers.dense_general(x.shape[-1], ("heads", "kv", "embed"), self.dtype, axis=(-2, -1),
                                name="out")(out)                           # [B, T, d_model]

  def _update_cache(self, key: jax.Array, value: jax.Array, cache_length: int | None):
    """Write this step's key/value at the cache index; return the whole cache and its mask."""
    initialized = self.has_variable("cache", "key")
    batch, _, heads, depth = key.shape
    shape = (batch, cache_length or 0, heads, depth)
    cached_key = self.variable("cache", "key", jnp.zeros, shape, key.dtype)
    cached_value = self.variable("cache", "value", jnp.zeros, shape, value.dtype)
    index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
    if not initialized:  # cache creation: nothing to attend to yet
      return key, value, causal_mask(key.shape[1])
    i = index.value
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, i, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, i, 0, 0))
    index.value = i + 1
    return cached_key.value, cached_value.value, cache_mask(i, cached_key.value.shape[1])
