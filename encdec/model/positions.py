"""Position schemes (`model.position_encoding`): what each stack knows about token order.

Absolute schemes add a vector per position to the token embeddings (`PositionEncoding`):
`sinusoidal` (Vaswani et al. 2017) and `learned`. The others act on self-attention alone and
reach cross-attention not at all (as in T5 and RoPE models):

- `t5_relative`: a learned bias per head and bucket of relative distance, added to the logits
  (Raffel et al. 2020, T5): bidirectional buckets in the encoder, causal ones in the decoder,
  one table per stack shared by its layers;
- `rope`: queries and keys rotated by angles proportional to their positions (Su et al. 2021,
  RoFormer), so their dot product depends on the distance only;
- `alibi`: a fixed penalty -m_h |i - j| with a geometric sequence of per-head slopes m_h
  (Press et al. 2022, ALiBi); causal masking makes it one-sided in the decoder;
- `none`: nothing (NoPE, Kazemnejad et al. 2023): the causal mask alone orders the decoder.

Each stack computes its scheme's `SelfAttentionPositions` once per forward pass (or decoding
step), from the per-example positions (packed batches keep working) and hands it to every layer.
In decoding, keys sit in the cache slot of their step, and decoding feeds step t at position t
(`decoding.decode_step`), so slot t is position t; a step's query is at its `tgt_positions`.
Nothing here depends on a maximum length except the `learned` table.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model.schema import TransformerConfig


# ---------------------------------------------------------------------------- absolute
def sinusoidal(positions: jax.Array, d_model: int) -> jax.Array:
  """[B, T] int positions --> [B, T, d_model] (Vaswani et al. 2017, sin | cos halves)."""
  half = d_model // 2
  inv_freq = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / max(half - 1, 1))
  angles = positions[..., None].astype(jnp.float32) * inv_freq                  # [B, T, half]
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(enc, [(0, 0), (0, 0), (0, d_model - 2 * half)])


class PositionEncoding(nn.Module):
  """Adds absolute position information to token embeddings: 'sinusoidal' or 'learned' (a
  'table' [max_len, d_model]); every other scheme leaves them unchanged."""
  kind: str
  max_len: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    d_model = x.shape[-1]
    if self.kind == "sinusoidal":
      return x + sinusoidal(positions, d_model).astype(x.dtype)
    if self.kind != "learned":
      return x
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed"))
    table = self.param("table", init, (self.max_len, d_model), jnp.float32)
    return x + jnp.take(table, positions, axis=0).astype(x.dtype)


# ---------------------------------------------------------------------------- relative
def relative_bucket(relative: jax.Array, *, bidirectional: bool, num_buckets: int,
                    max_distance: int) -> jax.Array:
  """T5's bucket of each relative position `relative` = key - query (int array, any shape).

  Bidirectional: half the buckets for keys after the query. Of a direction's buckets, the
  first half are exact distances 0, 1, ...; the rest grow logarithmically up to
  `max_distance`, beyond which all share the last. Unidirectional (causal): keys after the
  query all fall into bucket 0 (the mask hides them anyway).
  """
  distance = -relative                              # > 0: the key precedes the query
  bucket = jnp.zeros_like(relative)
  if bidirectional:
    num_buckets //= 2
    bucket = jnp.where(distance < 0, num_buckets, 0)
    distance = jnp.abs(distance)
  else:
    distance = jnp.maximum(distance, 0)
  exact = num_buckets // 2
  logarithmic = exact + (jnp.log(distance.astype(jnp.float32) / exact + jnp.finfo(jnp.float32).eps)
                         / math.log(max_distance / exact) * (num_buckets - exact)
                         ).astype(relative.dtype)
  logarithmic = jnp.minimum(logarithmic, num_buckets - 1)
  return bucket + jnp.where(distance < exact, distance, logarithmic)


def alibi_slopes(num_heads: int) -> jax.Array:
  """ALiBi's per-head slopes [H] (Press et al. 2022): 2^(-8/n), 2^(-16/n), ..., 2^(-8) for
  n = H a power of two; otherwise the n = 2^floor(log2 H) sequence followed by every other
  slope of the 2n sequence (the paper's recipe)."""
  def geometric(n):
    return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
  power = 2 ** int(math.floor(math.log2(num_heads)))
  slopes = geometric(power) + geometric(2 * power)[0::2][:num_heads - power]
  return jnp.array(slopes, jnp.float32)


def rotary_angles(positions: jax.Array, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
  """[B, T] positions --> (sin, cos), each float32 [B, T, 1, head_dim / 2]: the angle of feature
  pair i at position p is p / base^(2i / head_dim) (Su et al. 2021)."""
  inv_freq = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)   # [D/2]
  angles = positions[..., None, None].astype(jnp.float32) * inv_freq                # [B, T, 1, D/2]
  return jnp.sin(angles), jnp.cos(angles)


def rotate(x: jax.Array, rotary: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Queries or keys [B, T, H, D] rotated pairwise by `rotary_angles` (pairs (i, i + D/2), the
  GPT-NeoX / HF LLaMA layout)."""
  sin, cos = rotary
  first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)              # [B, T, H, D/2]
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


class SelfAttentionPositions(NamedTuple):
  """What self-attention's logits get from the position scheme, computed once per stack."""
  bias: jax.Array | None = None          # float32 [B|1, H, T, S], added to the logits
  rotary: tuple[jax.Array, jax.Array] | None = None   # (sin, cos) [B, T, 1, D/2] for Q and K

  def rotate(self, query: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """query, key [B, T, H, D] at this stack's positions (unchanged without RoPE)."""
    if self.rotary is None:
      return query, key
    return rotate(query, self.rotary), rotate(key, self.rotary)


class RelativePositions(nn.Module):
  """The stack's `SelfAttentionPositions` for its scheme, from positions [B, T].

  `causal`: the decoder (unidirectional T5 buckets). In decode mode the keys are the cache's
  slots 0..L-1, kept as a cache variable 'key_positions' [1, L] so later steps know L; the first
  call (creating the caches) attends to itself only, like `attention.update_cache`.
  T5's table is the parameter 'rel_embedding' [buckets, heads].
  """
  config: TransformerConfig
  causal: bool

  @nn.compact
  def __call__(self, positions: jax.Array, *, decode: bool = False,
               cache_length: int | None = None) -> SelfAttentionPositions:
    cfg, kind = self.config, self.config.position_encoding
    if kind == "rope":
      return SelfAttentionPositions(rotary=rotary_angles(positions, cfg.heads_dim, cfg.rope_base))
    if kind not in ("t5_relative", "alibi"):
      return SelfAttentionPositions()
    key_positions = positions                                              # [B, S]
    if decode:
      created = self.has_variable("cache", "key_positions")
      slots = self.variable("cache", "key_positions",
                            lambda: jnp.arange(cache_length, dtype=jnp.int32)[None])  # [1, L]
      key_positions = slots.value if created else positions
    relative = key_positions[:, None, :] - positions[:, :, None]           # [B, T, S]: j - i
    if kind == "alibi":
      penalty = jnp.abs(relative).astype(jnp.float32)[:, None]             # [B, 1, T, S]
      return SelfAttentionPositions(bias=-alibi_slopes(cfg.num_heads)[:, None, None] * penalty)
    table = self.param("rel_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=cfg.relative_buckets ** -0.5), (None, "heads")),
                       (cfg.relative_buckets, cfg.num_heads), jnp.float32)
    buckets = relative_bucket(relative, bidirectional=not self.causal,
                              num_buckets=cfg.relative_buckets,
                              max_distance=cfg.relative_max_distance)      # [B, T, S]
    return SelfAttentionPositions(bias=jnp.take(table, buckets, axis=0).transpose(0, 3, 1, 2))
