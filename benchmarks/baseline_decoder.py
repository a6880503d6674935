"""The decoding baseline: a straightforward Flax decoder, as in the Flax WMT example.

It caches only the decoder self-attention keys/values. The encoder output is expanded per beam
once with `jnp.repeat` ([B, S, d] --> [B*K, S, d], like the WMT example's
`flat_batch_beam_expand`) and fed to every step, where each layer re-projects the
cross-attention keys/values from it (K, V = H_enc W_K, H_enc W_V at every step, per beam).
encdec instead projects them once per source and shares them across beams.

`BaselineModel(module.config)` reads the parameters of an encdec `EncoderDecoder` unchanged
(same tree) and plugs into `encdec.decoding.greedy` / `beam_search`, so the search code is
identical and a comparison measures only the cross-attention caching. Only the standard
multi-head cross-attention ("mha") has a baseline.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import attention, cross_attention, layers, transformer


class RecomputedCrossAttention(cross_attention.MultiHeadCrossAttention):
  """Multi-head cross-attention that projects K/V from `encoded` on every call, decode included.

  Same parameters (query, kv, out) as MultiHeadCrossAttention; `encoded` has the batch of `x`.
  """

  @nn.compact
  def __call__(self, x: jax.Array, encoded: jax.Array, mask: jax.Array, *,
               deterministic: bool, decode: bool = False) -> jax.Array:
    cfg = self.config
    query = layers.dense_general((cfg.num_heads, cfg.heads_dim), ("embed", "heads", "kv"),
                                 cfg.compute_dtype, name="query")(x)       # [B*K, T, H, D]
    kv = self.project_kv(encoded)                    # every step: [B*K, S, 2, H, D]
    rate = cfg.attention_dropout_rate
    dropout_rng = None if deterministic or rate == 0 else self.make_rng("dropout")
    out = attention.dot_product_attention(query, kv[:, :, 0], kv[:, :, 1], mask,
                                          dropout_rate=rate, deterministic=deterministic,
                                          dropout_rng=dropout_rng)         # [B*K, T, H, D]
    return layers.dense_general(x.shape[-1], ("heads", "kv", "embed"), cfg.compute_dtype,
                                axis=(-2, -1), name="out")(out)             # [B*K, T, d_model]


class BaselineDecoderBlock(transformer.DecoderBlock):
  """encdec's DecoderBlock with the recomputing cross-attention."""

  @nn.compact
  def __call__(self, x, encoded, self_mask, cross_mask):
    cfg, det = self.config, not self.train
    self_attn = attention.SelfAttention(cfg.num_heads, cfg.heads_dim, cfg.attention_dropout_rate,
                                        cfg.compute_dtype, name="self_attention")
    cross_attn = RecomputedCrossAttention(cfg, name="cross_attention")
    mlp = layers.MLP(cfg.d_ff, cfg.activation, cfg.dropout_rate, cfg.compute_dtype, name="mlp")
    residual = lambda name: transformer.Residual(cfg.norm, cfg.dropout_rate, cfg.compute_dtype,
                                                 name=name)
    x = residual("self_attention_residual")(
        x, lambda h: self_attn(h, self_mask, deterministic=det, decode=self.decode,
                               cache_length=self.cache_length), deterministic=det)
    x = residual("cross_attention_residual")(
        x, lambda h: cross_attn(h, encoded, cross_mask, deterministic=det), deterministic=det)
    x = residual("mlp_residual")(x, lambda h: mlp(h, deterministic=det), deterministic=det)
    return x, None


class BaselineDecoder(transformer.Decoder):
  """H_enc [B, S, d], tgt_in [B*K, T] --> logits; the encoder output is kept per beam."""

  @nn.compact
  def __call__(self, encoded, src, tgt_in, *, src_segment_ids=None, tgt_segment_ids=None,
               positions=None, train: bool = False, decode: bool = False,
               cache_length: int | None = None):
    if src_segment_ids is not None or tgt_segment_ids is not None:
      raise ValueError("the baseline decoder does not take packed batches")
    cfg = self.config
    beams = tgt_in.shape[0] // src.shape[0]
    expand = lambda: jnp.repeat(encoded, beams, axis=0)                   # [B*K, S, d]
    if decode:  # expanded once when the cache is created, then an input to every step
      encoded = self.variable("cache", "encoded", expand).value
    else:
      encoded = expand()
    cross_mask = jnp.repeat(attention.cross_mask(src, None, None), beams, axis=0)  # [B*K,1,1,S]
    positions = (jnp.broadcast_to(jnp.arange(tgt_in.shape[1]), tgt_in.shape)
                 if positions is None else positions)
    y = layers.PositionEncoding(cfg.position_encoding, cfg.max_len, cfg.compute_dtype,
                                name="positions")(self.embed(tgt_in), positions)
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not train)
    self_mask = None if decode else attention.decoder_mask(tgt_in.shape[1], None)
    stack = transformer.layer_stack(BaselineDecoderBlock, cfg.num_decoder_layers,
                                    cfg.scan_layers, num_args=3, config=cfg, train=train,
                                    decode=decode, cache_length=cache_length)
    y = stack(y, encoded, self_mask, cross_mask)
    if cfg.norm == "pre":
      y = layers.norm(cfg.compute_dtype, name="norm")(y)
    if cfg.tie_output:
      logits = self.embed.attend(y) / jnp.sqrt(cfg.d_model).astype(y.dtype)
    else:
      logits = layers.dense_general(cfg.tgt_vocab_size, ("embed", "vocab"), cfg.compute_dtype,
                                    name="logits")(y)
    return logits.astype(jnp.float32)


class BaselineModel(transformer.EncoderDecoder):
  """encdec's EncoderDecoder (same encoder, same parameter tree) with the baseline decoder."""

  def setup(self):
    cfg = self.config
    if cfg.cross_attention != "mha":
      raise ValueError(f"the decode baseline is standard multi-head cross-attention; got "
                       f"model.cross_attention={cfg.cross_attention!r} (use 'mha')")
    tgt_embed = layers.embed(cfg.tgt_vocab_size, cfg.d_model, cfg.compute_dtype, "tgt_embed")
    src_embed = (tgt_embed if cfg.share_embeddings else
                 layers.embed(cfg.src_vocab_size, cfg.d_model, cfg.compute_dtype, "src_embed"))
    self.encoder = transformer.Encoder(cfg, src_embed)
    self.decoder = BaselineDecoder(cfg, tgt_embed)


def baseline_for(module: transformer.EncoderDecoder) -> BaselineModel:
  """The baseline model that reads `module`'s parameters."""
  return BaselineModel(module.config)
