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
every later step. A new variant is a small module here plus one line in
`schema.CROSS_ATTENTION`; the property tests in tests/test_cross_attention.py run over the
whole registry.

Class attributes tell the decoder how a variant sits in it (see `CrossAttentionBase`): its
`layout` in the decoder block (after self-attention, in parallel with it, or merged into it),
whether it reads all encoder layers, and a module run once per decoder whose output every
layer receives instead of the encoder output (`shared_memory`).

Class methods say what a variant costs, from the model config alone (no model is built):
`kv_heads`, `flops` (forward matmul FLOPs in the decoder, benchmarks/flops.py's convention) and
`cache_bytes` (decode-time K/V cache per source). The defaults are standard multi-head
cross-attention's; a variant overrides what it changes. benchmarks/flops.py and `encdec report`
read them, and tests/test_variant_metadata.py checks them against the built model for every
registered variant (the FLOPs of its traced matmuls, the cache decoding allocates).
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.errors import ConfigError
from encdec.model import attention, layers, positions
from encdec.model.schema import CROSS_ATTENTION  # the registry: pylint: disable=unused-import


class CrossAttentionBase(nn.Module):
  """What every variant shares: the model config, and how the decoder should use it."""
  config: Any   # TransformerConfig
  # "sequential": x -> self-attention -> this -> MLP; "parallel": self-attention(h) + this(h)
  # in one residual; "merged": this replaces self-attention (called with self_mask too).
  layout: ClassVar[str] = "sequential"
  # The encoder returns every layer's output [B, S, L+1, d] instead of the last one.
  reads_encoder_layers: ClassVar[bool] = False
  # A module applied once per decoder to the encoder output; layers get its result.
  shared_memory: ClassVar[type[nn.Module] | None] = None
  # False when a row's K/V mix its packed examples (the trainer refuses train.pack).
  supports_packing: ClassVar[bool] = True
  # Where it sows its attention probabilities [B, H, T, K] ('intermediates' collection), as a
  # path under its own scope, and what the K keys are: "source" positions or learned "latents".
  # None: it records none (attention_maps then says why, with the class docstring's first line).
  weights_path: ClassVar[tuple[str, ...] | None] = ("weights",)
  weights_keys: ClassVar[str] = "source"

  @classmethod
  def check_config(cls, config) -> None:
    """A ConfigError if the model config does not suit this variant (checked at build)."""

  @classmethod
  def kv_heads(cls, config) -> int:
    """K/V heads (0: the variant keeps no keys or values)."""
    return config.num_heads

  @classmethod
  def kv_length(cls, config, src_len: int) -> int:
    """Keys (and values) per source that the queries attend to: the source positions here."""
    return src_len

  @classmethod
  def kv_projections(cls, config) -> int:
    """K/V projections per decoder pass: one in each layer that has cross-attention."""
    return sum(config.cross_layers())

  @classmethod
  def cache_bytes(cls, config, src_len: int) -> int:
    """Decode-time cache bytes derived from one source of `src_len` tokens, all layers: its
    keys and values in the compute dtype (the self-attention cache is not the variant's)."""
    per_projection = 2 * cls.kv_heads(config) * cls.kv_length(config, src_len) * config.heads_dim
    return cls.kv_projections(config) * per_projection * jnp.dtype(config.compute_dtype).itemsize

  @classmethod
  def flops(cls, config, batch: int, src_len: int, tgt_len: int) -> dict[str, int]:
    """Forward matmul FLOPs in the whole decoder by component, 2 per multiply-add: queries of
    the targets, K/V projections, scores and weighted values over `kv_length` keys, output."""
    num_layers, inner = sum(config.cross_layers()), config.num_heads * config.heads_dim
    queries, keys, d = batch * tgt_len, cls.kv_length(config, src_len), config.d_model
    kv_inner = cls.kv_heads(config) * config.heads_dim
    return {"cross_q": num_layers * 2 * queries * d * inner,
            "cross_kv": cls.kv_projections(config) * 2 * batch * keys * d * 2 * kv_inner,
            "cross_attention": num_layers * 2 * 2 * queries * keys * inner,   # QK^T, weights V
            "cross_out": num_layers * 2 * queries * inner * d}


class MultiHeadCrossAttention(CrossAttentionBase):
  """Standard multi-head cross-attention (Vaswani et al., 2017, "Attention Is All You Need").

  Q = x W_Q, K = H_enc W_K, V = H_enc W_V, with `kv_heads()` K/V heads (here one per query head).
  Subclasses change one step: which K/V (`project_kv`, `keys_values`) or a logit bias.
  """

  def project_kv(self, memory: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, S, d_model] --> [B, S, 2, Hk, D] (keys and values in one matmul)."""
    cfg = self.config
    return attention.kv_projection(memory, self.kv_heads(cfg), cfg.heads_dim, cfg.compute_dtype,
                                   use_bias=cfg.attention_bias)

  def kv_mask(self, mask: jax.Array) -> jax.Array:
    """The mask over the keys `project_kv` returns (here: the source positions themselves)."""
    return mask

  def keys_values(self, memory: jax.Array | None, mask: jax.Array, decode: bool):
    """(K/V [B, S', 2, Hk, D], their mask); when decoding, projected once into the cache.

    The cache holds them as [2, B, Hk, S', D], the layout the attention matmuls read. The
    barrier keeps XLA from folding that transpose into the read-back below, which would leave
    a transposing copy of the whole K/V inside every decoding step.
    """
    if decode:
      store = lambda: jax.lax.optimization_barrier(
          jnp.moveaxis(self.project_kv(memory, mask), (2, 1), (0, 3)))     # [2, B, Hk, S', D]
      kv = jnp.moveaxis(self.variable("cache", "cached_kv", store).value, (0, 3), (2, 1))
    else:
      kv = self.project_kv(memory, mask)
    return kv, self.kv_mask(mask)

  def logit_bias(self, x: jax.Array, mask: jax.Array) -> jax.Array | None:
    """An additive bias [B*G, H|1, T, S] on the attention logits (none here)."""
    return None

  def attend(self, x: jax.Array, kv: jax.Array, mask: jax.Array, bias: jax.Array | None,
             deterministic: bool) -> jax.Array:
    """Queries from x [B*G, T, d] over kv [B, S, 2, Hk, D] --> [B*G, T, d]."""
    cfg = self.config
    query = attention.query_projection(x, cfg.num_heads, cfg.heads_dim, cfg.compute_dtype,
                                       use_bias=cfg.attention_bias)        # [B*G, T, H, D]
    rate = cfg.attention_dropout_rate
    dropout_rng = (self.make_rng("dropout") if layers.dropout_active(rate, deterministic)
                   else None)
    # Weights only when they are collected (attention maps): a call that returns them cannot
    # go to jax.nn.dot_product_attention (model.attention_impl).
    collect = self.is_mutable_collection("intermediates")
    out = attention.grouped_attention(
        query, kv[:, :, 0], kv[:, :, 1], mask, bias=bias, implementation=cfg.attention_impl,
        dropout_rate=rate, deterministic=deterministic, dropout_rng=dropout_rng,
        return_weights=collect)
    if collect:
      out, weights = out
      self.sow("intermediates", "weights", weights)  # [B, H, G*T, S]
    return attention.output_projection(out, x.shape[-1], cfg.compute_dtype,
                                       use_bias=cfg.attention_bias)        # [B*G, T, d]

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array | None, mask: jax.Array, *,
               deterministic: bool, decode: bool = False) -> jax.Array:
    kv, kv_mask = self.keys_values(memory, mask, decode)
    return self.attend(x, kv, kv_mask, self.logit_bias(x, mask), deterministic)


class MultiQueryCrossAttention(MultiHeadCrossAttention):
  """One K/V head shared by all query heads (Shazeer, 2019, "Fast Transformer Decoding: One
  Write-Head is All You Need"): the decode-time K/V cache shrinks by num_heads."""

  @classmethod
  def kv_heads(cls, config) -> int:
    return 1


class GroupedQueryCrossAttention(MultiHeadCrossAttention):
  """`model.cross_kv_heads` K/V heads, each shared by a group of query heads (Ainslie et al.,
  2023, "GQA: Training Generalized Multi-Query Transformer Models")."""

  @classmethod
  def kv_heads(cls, config) -> int:
    return config.cross_kv_heads or max(config.num_heads // 2, 1)

  @classmethod
  def check_config(cls, config) -> None:
    if config.num_heads % cls.kv_heads(config):
      raise ConfigError(f"model.cross_kv_heads={config.cross_kv_heads} (0: num_heads // 2) must "
                        f"give a divisor of model.num_heads={config.num_heads}")


class GatedCrossAttention(CrossAttentionBase):
  """tanh(alpha) * MHA(x), alpha a learned scalar initialised to 0, so training starts from a
  decoder that ignores the source (Alayrac et al., 2022, Flamingo's gated xattn-dense)."""
  weights_path = ("attention", "weights")   # the inner MHA's (before the gate)

  @nn.compact
  def __call__(self, x, memory, mask, *, deterministic: bool, decode: bool = False):
    alpha = self.param("gate", nn.with_logical_partitioning(nn.initializers.zeros, ()), (),
                       jnp.float32)
    y = MultiHeadCrossAttention(self.config, name="attention")(
        x, memory, mask, deterministic=deterministic, decode=decode)
    return jnp.tanh(alpha).astype(y.dtype) * y


class SharedKeyValues(MultiHeadCrossAttention):
  """The K/V half of multi-head cross-attention, run once per decoder (for `shared_kv`)."""

  @nn.compact
  def __call__(self, encoded: jax.Array | None, mask: jax.Array, *, decode: bool) -> jax.Array:
    return self.keys_values(encoded, mask, decode)[0]                      # [B, S, 2, H, D]


class SharedKVCrossAttention(MultiHeadCrossAttention):
  """The encoder output is projected to K/V once, and every decoder layer attends to those
  same K/V with its own queries (as in cross-layer K/V sharing, e.g. Xiao et al., 2019,
  "Sharing Attention Weights for Fast Transformer"): one K/V cache instead of one per layer."""
  shared_memory = SharedKeyValues

  @classmethod
  def kv_projections(cls, config) -> int:
    return 1                                                 # SharedKeyValues, once

  def keys_values(self, memory, mask, decode):
    return memory, mask                                      # already [B, S, 2, H, D]


class LatentCrossAttention(MultiHeadCrossAttention):
  """The source is first compressed to `model.cross_latents` learned latent vectors, which
  cross-attend to the encoder output (Perceiver, Jaegle et al., 2021); the decoder then
  attends to the latents. K/V cache: M latents per source, whatever the source length."""
  supports_packing = False   # the latents of a row would mix its packed examples
  weights_keys = "latents"   # the decoder attends to the latents, not the source positions

  @classmethod
  def kv_length(cls, config, src_len):
    return config.cross_latents

  @classmethod
  def flops(cls, config, batch, src_len, tgt_len):
    """Plus compressing the source in each layer: the latents' queries (once, not per
    example), K/V of the source, the latents' attention over it, their output projection."""
    num_layers, inner = sum(config.cross_layers()), config.num_heads * config.heads_dim
    latents, d = config.cross_latents, config.d_model
    return {**super().flops(config, batch, src_len, tgt_len),
            "cross_latent_q": num_layers * 2 * latents * d * inner,
            "cross_latent_kv": num_layers * 2 * batch * src_len * d * 2 * inner,
            "cross_latent_attention": num_layers * 2 * 2 * batch * latents * src_len * inner,
            "cross_latent_out": num_layers * 2 * batch * latents * inner * d}

  def project_kv(self, memory, mask):
    """[B, S, d] --> [B, M, 2, Hk, D]: z = latents + Attn(latents -> H_enc); K/V of z."""
    cfg = self.config
    latents = self.param("latents", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ("latents", "embed")), (cfg.cross_latents, cfg.d_model),
                         jnp.float32).astype(cfg.compute_dtype)            # [M, d]
    query = attention.query_projection(latents, cfg.num_heads, cfg.heads_dim, cfg.compute_dtype,
                                       name="latent_query", use_bias=cfg.attention_bias)
    query = jnp.broadcast_to(query, (memory.shape[0],) + query.shape)      # [B, M, H, D]
    kv = attention.kv_projection(memory, cfg.num_heads, cfg.heads_dim, cfg.compute_dtype,
                                 name="source_kv", head_axis="heads",
                                 use_bias=cfg.attention_bias)              # [B, S, 2, H, D]
    source_mask = jnp.any(mask, axis=2, keepdims=True)                     # [B, 1, 1, S]
    read = attention.dot_product_attention(query, kv[:, :, 0], kv[:, :, 1], source_mask,
                                           implementation=cfg.attention_impl)
    z = latents + attention.output_projection(read, cfg.d_model, cfg.compute_dtype,
                                              name="latent_out",
                                              use_bias=cfg.attention_bias)  # [B, M, d]
    return super().project_kv(z, mask)

  def kv_mask(self, mask):
    return jnp.ones((1, 1, 1, self.config.cross_latents), bool)


class AllLayersCrossAttention(MultiHeadCrossAttention):
  """Attends to a learned softmax-weighted mix of all encoder layers' outputs (embeddings
  included), one mix per decoder layer ("transparent attention", Bapna et al., 2018,
  "Training Deeper Neural Machine Translation Models with Transparent Attention")."""
  reads_encoder_layers = True

  @classmethod
  def flops(cls, config, batch, src_len, tgt_len):
    """Plus each layer's mix of the L+1 encoder outputs (a contraction over the layers)."""
    mix = 2 * batch * src_len * (config.num_encoder_layers + 1) * config.d_model
    return {**super().flops(config, batch, src_len, tgt_len),
            "cross_layer_mix": sum(config.cross_layers()) * mix}

  def project_kv(self, memory, mask):
    """memory [B, S, L+1, d] --> K/V of sum_l softmax(w)_l H_l."""
    mix = self.param("layer_weights", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                   ("encoder_layers",)),
                     (memory.shape[2],), jnp.float32)
    weights = jax.nn.softmax(mix).astype(memory.dtype)
    return super().project_kv(jnp.einsum("bsld,l->bsd", memory, weights), mask)


class ParallelCrossAttention(MultiHeadCrossAttention):
  """Multi-head cross-attention computed from the same input as self-attention, the two
  summed in one residual (the parallel layers of flaxformer / PaLM's parallel block)."""
  layout = "parallel"


class LocalCrossAttention(MultiHeadCrossAttention):
  """Each query head predicts a source position p = start + sigmoid(w·x) (len - 1) and attends
  only within `model.cross_window` positions of it, with a Gaussian preference (sigma =
  window / 2) for the centre ("local-p" attention, Luong et al., 2015). Suits monotonic tasks."""

  @classmethod
  def flops(cls, config, batch, src_len, tgt_len):
    """Plus each layer's prediction of a source position per query head."""
    position = 2 * batch * tgt_len * config.d_model * config.num_heads
    return {**super().flops(config, batch, src_len, tgt_len),
            "cross_local_position": sum(config.cross_layers()) * position}

  def logit_bias(self, x, mask):
    cfg = self.config
    rows = x.shape[0]
    frac = jax.nn.sigmoid(layers.dense_general(cfg.num_heads, ("embed", "heads"), jnp.float32,
                                               use_bias=True, name="position")(x))  # [R, T, H]
    mask = jnp.repeat(mask, rows // mask.shape[0], axis=0)                  # [R, 1, T|1, S]
    start = jnp.argmax(mask, axis=-1)[..., None]                           # [R, 1, T|1, 1]
    length = jnp.sum(mask, axis=-1)[..., None]
    centre = start + frac.transpose(0, 2, 1)[..., None] * jnp.maximum(length - 1, 0)
    distance = jnp.arange(mask.shape[-1]) - centre                         # [R, H, T, S]
    sigma = cfg.cross_window / 2
    outside = jnp.where(jnp.abs(distance) <= cfg.cross_window, 0.0, -1e9)
    return outside - distance ** 2 / (2 * sigma ** 2)


class MergedAttention(MultiHeadCrossAttention):
  """Self- and cross-attention as one: a single softmax over [decoder prefix keys; encoder
  keys] with shared queries and one output projection (merged attention, Zhang, Titov &
  Sennrich, 2019, "Improving Deep Transformer with Depth-Scaled Initialization and Merged
  Attention"; they pair it with an average-attention prefix, here it is dot-product). The
  target-prefix part gets the decoder's relative position scheme (`self_positions`: bias,
  rotated queries and keys) as self-attention would; the source part gets none. Its joint
  softmax is computed here: model.attention_impl does not apply to it."""
  layout = "merged"

  @classmethod
  def flops(cls, config, batch, src_len, tgt_len):
    """Its queries and output projection are self-attention's (counted there by
    benchmarks/flops.py): K/V of the source and attending over it remain."""
    return {**super().flops(config, batch, src_len, tgt_len), "cross_q": 0, "cross_out": 0}

  @nn.compact
  def __call__(self, x, memory, mask, *, deterministic: bool, decode: bool = False,
               self_mask: jax.Array | None = None, cache_length: int | None = None,
               self_positions: positions.SelfAttentionPositions | None = None):
    cfg = self.config
    self_positions = self_positions or positions.SelfAttentionPositions()
    query, key, value = attention.qkv_projection(
        x, cfg.num_heads, cfg.heads_dim, cfg.compute_dtype, decode,
        use_bias=cfg.attention_bias)                                        # [R, T, H, D] each
    self_query, key = self_positions.rotate(query, key)   # the source part gets no positions
    if decode:
      key, value, self_mask = attention.update_cache(self, key, value, cache_length)
    kv, mask = self.keys_values(memory, mask, decode)                       # [B, S, 2, H, D]
    rows, batch = x.shape[0], kv.shape[0]
    self_logits = attention.attention_logits(self_query, key, self_mask,
                                             self_positions.bias)           # [R, H, T, T']
    cross_logits = attention.unfold_beam_scores(attention.attention_logits(
        attention.fold_beams(query, batch), kv[:, :, 0],
        attention.fold_beam_mask(mask, rows // batch)), rows)               # [R, H, T, S]
    weights = jax.nn.softmax(jnp.concatenate([self_logits, cross_logits], -1), axis=-1)
    rate = cfg.attention_dropout_rate
    dropout_rng = (self.make_rng("dropout") if layers.dropout_active(rate, deterministic)
                   else None)
    weights = attention.attention_dropout(weights.astype(value.dtype), rate, deterministic,
                                          dropout_rng)
    self_weights, cross_weights = jnp.split(weights, [key.shape[1]], axis=-1)
    cross_weights = attention.fold_beam_scores(cross_weights, batch)        # [B, H, G*T, S]
    self.sow("intermediates", "weights", cross_weights)
    out = (attention.weighted_values(self_weights, value) + attention.unfold_beams(
        attention.weighted_values(cross_weights, kv[:, :, 1]), rows))       # [R, T, H, D]
    return attention.output_projection(out, x.shape[-1], cfg.compute_dtype,
                                       use_bias=cfg.attention_bias)


class NoCrossAttention(CrossAttentionBase):
  """No cross-attention: a control in which the decoder cannot read the source."""
  weights_path = None

  @classmethod
  def kv_heads(cls, config) -> int:
    return 0

  @classmethod
  def flops(cls, config, batch, src_len, tgt_len):
    return {}

  def __call__(self, x, memory, mask, *, deterministic: bool, decode: bool = False):
    return jnp.zeros_like(x)


def get(name: str) -> type[nn.Module]:
  """The cross-attention class registered as `name` (schema.CROSS_ATTENTION); a one-line
  ConfigError listing the valid names for unknown ones."""
  return CROSS_ATTENTION[name]
