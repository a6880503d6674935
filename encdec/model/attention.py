"""Attention masks and multi-head self-attention (with an autoregressive cache).

All masks are boolean, True = may attend, shaped [batch, 1 (heads), q_len, kv_len]
(any of the leading dims may be 1 and broadcast). They are built here and nowhere else.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import layers, positions as positions_lib


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


def encoder_mask(src: jax.Array, src_segment_ids: jax.Array | None, pad_id: int) -> jax.Array:
  """Bidirectional encoder self-attention: real keys (not `pad_id`; of the same segment when
  packed)."""
  if src_segment_ids is not None:
    return segment_mask(src_segment_ids, src_segment_ids)
  return key_padding_mask(src != pad_id)


def decoder_mask(tgt_len: int, tgt_segment_ids: jax.Array | None) -> jax.Array:
  """Causal decoder self-attention. Future keys (and so all trailing padding) are hidden."""
  mask = causal_mask(tgt_len)
  if tgt_segment_ids is not None:
    mask = mask & segment_mask(tgt_segment_ids, tgt_segment_ids)
  return mask


def cross_mask(src: jax.Array, src_segment_ids: jax.Array | None,
               tgt_segment_ids: jax.Array | None, pad_id: int) -> jax.Array:
  """Decoder queries over encoder keys: real source tokens (not `pad_id`; of the same segment
  when packed)."""
  if src_segment_ids is not None and tgt_segment_ids is not None:
    return segment_mask(tgt_segment_ids, src_segment_ids)
  return key_padding_mask(src != pad_id)


def cache_mask(cache_index: jax.Array, cache_length: int) -> jax.Array:
  """Decoding step at position `cache_index` --> [1, 1, 1, L]: keys 0..index."""
  return (jnp.arange(cache_length) <= cache_index)[None, None, None, :]


# ------------------------------------------------------------------------ attention
def attention_logits(query: jax.Array, key: jax.Array, mask: jax.Array,
                     bias: jax.Array | None = None) -> jax.Array:
  """QK^T/sqrt(d) (+ bias), masked: float32 [B, H, T, S].

  query [B, T, H, D]; key [B, S, Hk, D] with Hk dividing H (Hk = H: multi-head, Hk = 1:
  multi-query, else grouped-query); mask [B|1, 1|H, T|1, S] bool; bias broadcasts to the logits.
  """
  batch, length, heads, depth = query.shape
  kv_heads = key.shape[2]
  query = query / jnp.sqrt(depth).astype(query.dtype)
  query = query.reshape(batch, length, kv_heads, heads // kv_heads, depth)   # [B, T, Hk, R, D]
  logits = jnp.einsum("btgrd,bsgd->bgrts", query, key).astype(jnp.float32)
  logits = logits.reshape(batch, heads, length, key.shape[1])                # [B, H, T, S]
  if bias is not None:
    logits = logits + bias
  return jnp.where(mask, logits, jnp.finfo(jnp.float32).min)


def weighted_values(weights: jax.Array, value: jax.Array) -> jax.Array:
  """weights [B, H, T, S] @ value [B, S, Hk, D] (query head h reads K/V head h // (H/Hk))."""
  batch, heads, length, source = weights.shape
  kv_heads, depth = value.shape[2], value.shape[3]
  grouped = weights.reshape(batch, kv_heads, heads // kv_heads, length, source)
  out = jnp.einsum("bgrts,bsgd->btgrd", grouped.astype(value.dtype), value)   # [B, T, Hk, R, D]
  return out.reshape(batch, length, heads, depth)                            # [B, T, H, D]


def attention_dropout(weights: jax.Array, rate, deterministic: bool,
                      rng: jax.Array | None) -> jax.Array:
  if not layers.dropout_active(rate, deterministic):
    return weights
  return layers.dropout(weights, rate, rng)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                          *, bias: jax.Array | None = None, causal: bool = False,
                          implementation: str = "xla", dropout_rate=0.0,
                          deterministic: bool = True, dropout_rng: jax.Array | None = None,
                          return_weights: bool = False):
  """softmax(QK^T/sqrt(d) + bias + M) V, with K/V heads shared by groups of query heads.

  query [B, T, H, D]; key, value [B, S, Hk, D]; mask [B|1, 1|H, T|1, S] bool.
  Returns [B, T, H, D] (and the weights [B, H, T, S] if asked).

  `implementation` is `model.attention_impl` (see `jax_implementation`): "xla" computes it here
  with einsums; "jax" / "cudnn" / "auto" hand it to jax.nn.dot_product_attention, which takes
  our layouts as they are (Q/K/V [B, T|S, N, H]; mask and bias [B, N, T, S]) and K/V heads that
  divide the query heads natively. Calls it cannot serve are computed here whatever is asked:
  attention dropout while training (it has no dropout) and `return_weights` (it returns none).
  `causal` promises that `mask` already hides every key after its query (query i, key j > i,
  both counted from 0): it is passed on as `is_causal`, which lets cuDNN skip those blocks and,
  ANDed with a mask that has it, changes no number. Never set it for a decoding step (T = 1
  over a cache).
  """
  dropout = layers.dropout_active(dropout_rate, deterministic)
  chosen = jax_implementation(implementation, query, key,
                              serveable=not (dropout or return_weights))
  if chosen is not None:
    return jax_attention(query, key, value, mask, bias, causal, chosen)
  weights = jax.nn.softmax(attention_logits(query, key, mask, bias), axis=-1)
  weights = weights.astype(value.dtype)
  out = weighted_values(attention_dropout(weights, dropout_rate, deterministic, dropout_rng),
                        value)
  return (out, weights) if return_weights else out


# ------------------------------------------------------ jax.nn.dot_product_attention (cuDNN)
# cuDNN's fused (flash) attention: half-precision Q/K/V, head dims a multiple of 8 up to 128
# (256 from Hopper on; "auto" keeps to 128), and, when training with a bias (our masks become
# one), even query and key lengths. "auto" uses it only for calls that meet all of these.
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_MAX_HEAD_DIM = 256
CUDNN_AUTO_MAX_HEAD_DIM = 128


def cudnn_backend() -> bool:
  """Whether JAX's default backend is an NVIDIA (CUDA) GPU: the only place cuDNN runs."""
  device = jax.devices()[0]
  return device.platform == "gpu" and "cuda" in device.client.platform_version.lower()


def cudnn_problem(dtype, head_dim: int) -> str | None:
  """Why cuDNN's attention cannot run a model of compute `dtype` and `head_dim` here (None:
  it can). Checked when a model with attention_impl="cudnn" is built (transformer.build)."""
  if not cudnn_backend():
    return f"cuDNN needs an NVIDIA GPU, and JAX's backend is {jax.default_backend()!r}"
  if jnp.dtype(dtype).name not in CUDNN_DTYPES:
    return f"cuDNN attention needs model.dtype bfloat16 (or auto), got {jnp.dtype(dtype).name}"
  if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
    return f"cuDNN attention needs a head dimension multiple of 8, <= 256, got {head_dim}"
  return None


def cudnn_qualifies(query: jax.Array, key: jax.Array) -> bool:
  """Whether "auto" may give this call to cuDNN (static shapes and dtypes only)."""
  length, depth, source = query.shape[1], query.shape[3], key.shape[1]
  return (depth <= CUDNN_AUTO_MAX_HEAD_DIM and length % 2 == 0 and source % 2 == 0
          and cudnn_problem(query.dtype, depth) is None)


def jax_implementation(requested: str, query: jax.Array, key: jax.Array, *,
                       serveable: bool) -> str | None:
  """The `implementation` for jax.nn.dot_product_attention, or None: our own einsums.

  requested (model.attention_impl): "xla" (ours), "jax" (its XLA implementation), "cudnn"
  (cuDNN, which transformer.build checked is there), "auto" ("cudnn" where the backend and the
  call qualify, else ours). `serveable`: False for calls jax.nn cannot do (dropout, weights).
  """
  if requested == "xla" or not serveable:
    return None
  if requested == "auto":
    return "cudnn" if cudnn_qualifies(query, key) else None
  return {"jax": "xla", "cudnn": "cudnn"}[requested]


def jax_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                  bias: jax.Array | None, causal: bool, implementation: str) -> jax.Array:
  """jax.nn.dot_product_attention on our layouts: query [B, T, H, D]; key, value [B, S, Hk, D];
  mask [B|1, 1|H, T|1, S]; bias [B|1, H|1, T, S] --> [B, T, H, D].

  cuDNN adds the mask to the bias (as a large negative number where False), and its bias must
  span the logits' [T, S]: both are broadcast to it there, and the bias cast to the Q/K/V dtype.
  The padding and segment masks go that way rather than as sequence lengths: sequence lengths
  would also zero padded query rows and assume padding is trailing, changing numbers.
  """
  if implementation == "cudnn":
    span = (query.shape[1], key.shape[1])
    mask = jnp.broadcast_to(mask, mask.shape[:2] + span)                   # [B|1, 1, T, S]
    if bias is not None:
      bias = jnp.broadcast_to(bias, bias.shape[:2] + span).astype(query.dtype)
  return jax.nn.dot_product_attention(query, key, value, bias, mask, is_causal=causal,
                                      implementation=implementation)


# Beams share a source: the G query rows of a source are folded into its time axis, so the
# source's K/V (kept at batch B) are never copied per beam.
def fold_beams(x: jax.Array, batch: int) -> jax.Array:
  """[B*G, T, ...] --> [B, G*T, ...]."""
  return x.reshape((batch, -1) + x.shape[2:])


def unfold_beams(x: jax.Array, rows: int) -> jax.Array:
  """[B, G*T, ...] --> [B*G, T, ...]."""
  return x.reshape((rows, -1) + x.shape[2:])


def fold_beam_scores(x: jax.Array, batch: int) -> jax.Array:
  """Logits/weights/bias [B*G, H, T, S] --> [B, H, G*T, S]."""
  rows, heads, length, source = x.shape
  x = x.reshape(batch, rows // batch, heads, length, source).transpose(0, 2, 1, 3, 4)
  return x.reshape(batch, heads, -1, source)


def unfold_beam_scores(x: jax.Array, rows: int) -> jax.Array:
  """[B, H, G*T, S] --> [B*G, H, T, S]."""
  batch, heads, _, source = x.shape
  x = x.reshape(batch, heads, rows // batch, -1, source).transpose(0, 2, 1, 3, 4)
  return x.reshape(rows, heads, -1, source)


def fold_beam_mask(mask: jax.Array, groups: int) -> jax.Array:
  """A source mask [B|1, 1, T|1, S] for queries folded to G*T."""
  return mask if mask.shape[2] == 1 else jnp.tile(mask, (1, 1, groups, 1))


def grouped_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                      *, bias: jax.Array | None = None, **kwargs):
  """Attention when the query batch is a multiple of the key batch (beams share a source).

  query [B*G, T, H, D] with key/value [B, S, Hk, D], mask [B|1, 1, T|1, S] and bias
  [B*G, H|1, T, S] (optional). Returns [B*G, T, H, D] (and weights [B, H, G*T, S] if asked).
  """
  batch, rows = key.shape[0], query.shape[0]
  if rows == batch:
    return dot_product_attention(query, key, value, mask, bias=bias, **kwargs)
  if bias is not None:
    bias = fold_beam_scores(jnp.broadcast_to(bias, (rows, query.shape[2]) + bias.shape[2:]),
                            batch)
  out = dot_product_attention(fold_beams(query, batch), key, value,
                              fold_beam_mask(mask, rows // batch), bias=bias, **kwargs)
  if kwargs.get("return_weights"):
    return unfold_beams(out[0], rows), out[1]
  return unfold_beams(out, rows)                                         # [B*G, T, H, D]


class SelfAttention(nn.Module):
  """Multi-head self-attention; with `decode=True` it keeps a K/V cache of `cache_length`.

  In decode mode the first call (when the cache does not exist yet) only creates the empty
  cache; every later call takes one new token per row and attends to all cached ones.
  `positions` (the stack's position scheme, positions.SelfAttentionPositions) rotates the
  queries and keys before the keys are cached and biases the logits.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float | jax.Array = 0.0
  dtype: jnp.dtype = jnp.float32
  use_bias: bool = False   # biases on the Q/K/V and output projections
  implementation: str = "xla"   # model.attention_impl (dot_product_attention)
  causal: bool = False     # the mask it gets (outside decoding) hides future keys: the decoder

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, *, deterministic: bool,
               decode: bool = False, cache_length: int | None = None,
               positions: positions_lib.SelfAttentionPositions | None = None) -> jax.Array:
    positions = positions or positions_lib.SelfAttentionPositions()
    query, key, value = qkv_projection(x, self.num_heads, self.head_dim, self.dtype, decode,
                                       use_bias=self.use_bias)
    query, key = positions.rotate(query, key)                               # [B, T, H, D]
    if decode:
      key, value, mask = update_cache(self, key, value, cache_length)
    active = layers.dropout_active(self.dropout_rate, deterministic)
    dropout_rng = self.make_rng("dropout") if active else None
    out = dot_product_attention(query, key, value, mask, bias=positions.bias,
                                causal=self.causal and not decode,
                                implementation=self.implementation,
                                dropout_rate=self.dropout_rate, deterministic=deterministic,
                                dropout_rng=dropout_rng)
    return output_projection(out, x.shape[-1], self.dtype,
                             use_bias=self.use_bias)                       # [B, T, d_model]


def query_projection(x: jax.Array, num_heads: int, head_dim: int, dtype,
                     name: str = "query", use_bias: bool = False) -> jax.Array:
  """[B, T, d_model] --> [B, T, H, D] (call from a compact method)."""
  return layers.dense_general((num_heads, head_dim), ("embed", "heads", "kv"), dtype,
                              use_bias=use_bias, name=name)(x)


def kv_projection(x: jax.Array, kv_heads: int, head_dim: int, dtype, name: str = "kv",
                  head_axis: str = "kv_heads", use_bias: bool = False) -> jax.Array:
  """[B, S, d_model] --> [B, S, 2, Hk, D]: keys and values in one matmul."""
  return layers.dense_general((2, kv_heads, head_dim), ("embed", "qkv", head_axis, "kv"), dtype,
                              use_bias=use_bias, name=name)(x)


def qkv_projection(x: jax.Array, num_heads: int, head_dim: int, dtype, decode: bool = False,
                   use_bias: bool = False):
  """[B, T, d_model] --> query, key, value, each [B, T, H, D]; one stacked kernel 'qkv'
  (three matmuls when training, one when decoding: see layers.StackedProjection)."""
  return layers.StackedProjection(3, (num_heads, head_dim), ("embed", "qkv", "heads", "kv"),
                                  dtype, one_matmul=decode, use_bias=use_bias, name="qkv")(x)


def output_projection(heads: jax.Array, d_model: int, dtype, name: str = "out",
                      use_bias: bool = False) -> jax.Array:
  """[B, T, H, D] --> [B, T, d_model] (call from a compact method)."""
  return layers.dense_general(d_model, ("heads", "kv", "embed"), dtype, axis=(-2, -1),
                              use_bias=use_bias, name=name)(heads)


def update_cache(module: nn.Module, key: jax.Array, value: jax.Array, cache_length: int | None):
  """Write this step's key/value into `module`'s cache; return the whole cache and its mask.

  The first call (no cache yet) creates an empty cache of `cache_length` steps and returns
  the inputs unchanged with a causal mask. Cache variables: 'key', 'value' [B, H, L, D] and
  'index' (decoding.reorder_cache reorders 'key'/'value' rows by beam). The cache is stored
  heads-major, as the attention matmuls read it, so a step does not transpose the whole cache;
  it is returned as [B, L, H, D] (XLA folds the two transposes away).
  """
  initialized = module.has_variable("cache", "key")
  batch, _, heads, depth = key.shape
  shape = (batch, heads, cache_length or 0, depth)
  cached_key = module.variable("cache", "key", jnp.zeros, shape, key.dtype)
  cached_value = module.variable("cache", "value", jnp.zeros, shape, value.dtype)
  index = module.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
  if not initialized:  # cache creation: nothing to attend to yet
    return key, value, causal_mask(key.shape[1])
  i = index.value
  for cached, new in ((cached_key, key), (cached_value, value)):
    cached.value = jax.lax.dynamic_update_slice(cached.value, new.swapaxes(1, 2), (0, 0, i, 0))
  index.value = i + 1
  return (cached_key.value.swapaxes(1, 2), cached_value.value.swapaxes(1, 2),
          cache_mask(i, cached_key.value.shape[2]))
