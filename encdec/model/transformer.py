"""The encoder–decoder transformer: blocks, layer stacks (scanned or unrolled), the model."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import attention, cross_attention, layers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the model (hashable, so modules can hold it). See configs/."""
  src_vocab_size: int
  tgt_vocab_size: int
  d_model: int = 256
  num_heads: int = 4
  head_dim: int = 0                # 0: d_model // num_heads
  d_ff: int = 1024
  num_encoder_layers: int = 3
  num_decoder_layers: int = 3
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  cross_attention: str = "mha"     # a name in encdec.model.CROSS_ATTENTION
  cross_kv_heads: int = 0          # "gqa": K/V heads (dividing num_heads); 0: num_heads // 2
  share_embeddings: bool = False   # one table for source and target tokens
  tie_output: bool = True          # output projection = target embedding transposed
  position_encoding: str = "sinusoidal"   # | "learned"
  max_len: int = 512               # longest position for learned encodings
  norm: str = "pre"                # "pre" (x + f(LN(x))) | "post" (LN(x + f(x)))
  activation: str = "relu"
  dtype: str = "float32"           # compute dtype; params are always float32
  scan_layers: bool = True         # nn.scan over layers: compile time independent of depth

  def __post_init__(self):
    cross_attention.get(self.cross_attention)
    _check_choice("position_encoding", self.position_encoding, ("sinusoidal", "learned"))
    _check_choice("norm", self.norm, ("pre", "post"))
    _check_choice("activation", self.activation, tuple(layers.ACTIVATIONS))
    _check_choice("dtype", self.dtype, tuple(DTYPES))
    if self.d_model % self.num_heads and not self.head_dim:
      raise ValueError(f"model.d_model={self.d_model} is not divisible by "
                       f"model.num_heads={self.num_heads}; set model.head_dim")
    if self.cross_attention == "gqa" and self.num_heads % max(self.cross_kv_heads, 1):
      raise ValueError(f"model.cross_kv_heads={self.cross_kv_heads} must divide "
                       f"model.num_heads={self.num_heads}")
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ValueError("model.share_embeddings needs src_vocab_size == tgt_vocab_size "
                       f"(got {self.src_vocab_size} and {self.tgt_vocab_size})")

  @property
  def heads_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]


def _check_choice(field: str, value: str, valid: tuple[str, ...]):
  if value not in valid:
    raise ValueError(f"unknown model.{field} {value!r}; valid: {', '.join(valid)}")


class Residual(nn.Module):
  """x + dropout(f(LN(x))) (pre-LN) or LN(x + dropout(f(x))) (post-LN) around a sublayer."""
  norm: str
  dropout_rate: float
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, sublayer: Callable[[jax.Array], jax.Array], *,
               deterministic: bool) -> jax.Array:
    ln = layers.norm(self.dtype, name="norm")
    y = sublayer(ln(x) if self.norm == "pre" else x)
    y = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return y if self.norm == "pre" else ln(y)


class EncoderBlock(nn.Module):
  """Bidirectional (padding-masked) self-attention, then an MLP."""
  config: TransformerConfig
  train: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array):
    cfg, det = self.config, not self.train
    attn = attention.SelfAttention(cfg.num_heads, cfg.heads_dim, cfg.attention_dropout_rate,
                                   cfg.compute_dtype, name="self_attention")
    mlp = layers.MLP(cfg.d_ff, cfg.activation, cfg.dropout_rate, cfg.compute_dtype, name="mlp")
    residual = lambda name: Residual(cfg.norm, cfg.dropout_rate, cfg.compute_dtype, name=name)
    x = residual("attention_residual")(x, lambda h: attn(h, mask, deterministic=det),
                                       deterministic=det)
    x = residual("mlp_residual")(x, lambda h: mlp(h, deterministic=det), deterministic=det)
    return x, None


class DecoderBlock(nn.Module):
  """Causal self-attention, then cross-attention over the encoder output, then an MLP."""
  config: TransformerConfig
  train: bool = False
  decode: bool = False
  cache_length: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, encoded: jax.Array | None, self_mask: jax.Array,
               cross_mask: jax.Array):
    cfg, det = self.config, not self.train
    self_attn = attention.SelfAttention(cfg.num_heads, cfg.heads_dim, cfg.attention_dropout_rate,
                                        cfg.compute_dtype, name="self_attention")
    cross_attn = cross_attention.get(cfg.cross_attention)(cfg, name="cross_attention")
    mlp = layers.MLP(cfg.d_ff, cfg.activation, cfg.dropout_rate, cfg.compute_dtype, name="mlp")
    residual = lambda name: Residual(cfg.norm, cfg.dropout_rate, cfg.compute_dtype, name=name)
    x = residual("self_attention_residual")(
        x, lambda h: self_attn(h, self_mask, deterministic=det, decode=self.decode,
                               cache_length=self.cache_length), deterministic=det)
    x = residual("cross_attention_residual")(
        x, lambda h: cross_attn(h, encoded, cross_mask, deterministic=det, decode=self.decode),
        deterministic=det)
    x = residual("mlp_residual")(x, lambda h: mlp(h, deterministic=det), deterministic=det)
    return x, None


def layer_stack(block: type[nn.Module], num_layers: int, scan: bool, num_args: int, **kwargs):
  """`num_layers` copies of `block` applied in sequence to x: fn(x, *args) -> x.

  With `scan`, parameters (and caches) are stacked on a leading 'layers' axis and the block is
  traced once (nn.scan), so compile time does not grow with depth.
  """
  if scan:
    stacked = nn.scan(block, variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast,) * num_args, length=num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})(**kwargs, name="layers")
    return lambda x, *args: stacked(x, *args)[0]
  blocks = [block(**kwargs, name=f"layer_{i}") for i in range(num_layers)]

  def apply(x, *args):
    for b in blocks:
      x, _ = b(x, *args)
    return x
  return apply


def _default_positions(tokens: jax.Array) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)


class Encoder(nn.Module):
  """src [B, S] --> H_enc [B, S, d_model]: embeddings + positions, N encoder blocks."""
  config: TransformerConfig
  embed: nn.Embed

  @nn.compact
  def __call__(self, src, *, segment_ids=None, positions=None, train: bool = False):
    cfg = self.config
    positions = _default_positions(src) if positions is None else positions
    x = layers.PositionEncoding(cfg.position_encoding, cfg.max_len, cfg.compute_dtype,
                                name="positions")(self.embed(src), positions)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    stack = layer_stack(EncoderBlock, cfg.num_encoder_layers, cfg.scan_layers, num_args=1,
                        config=cfg, train=train)
    x = stack(x, attention.encoder_mask(src, segment_ids))
    return layers.norm(cfg.compute_dtype, name="norm")(x) if cfg.norm == "pre" else x


class Decoder(nn.Module):
  """H_enc, tgt_in [B*G, T] --> logits float32 [B*G, T, tgt_vocab]."""
  config: TransformerConfig
  embed: nn.Embed

  @nn.compact
  def __call__(self, encoded, src, tgt_in, *, src_segment_ids=None, tgt_segment_ids=None,
               positions=None, train: bool = False, decode: bool = False,
               cache_length: int | None = None):
    cfg = self.config
    positions = _default_positions(tgt_in) if positions is None else positions
    y = layers.PositionEncoding(cfg.position_encoding, cfg.max_len, cfg.compute_dtype,
                                name="positions")(self.embed(tgt_in), positions)
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not train)
    self_mask = None if decode else attention.decoder_mask(tgt_in.shape[1], tgt_segment_ids)
    stack = layer_stack(DecoderBlock, cfg.num_decoder_layers, cfg.scan_layers, num_args=3,
                        config=cfg, train=train, decode=decode, cache_length=cache_length)
    y = stack(y, encoded, self_mask, attention.cross_mask(src, src_segment_ids, tgt_segment_ids))
    if cfg.norm == "pre":
      y = layers.norm(cfg.compute_dtype, name="norm")(y)
    if cfg.tie_output:
      logits = self.embed.attend(y) / jnp.sqrt(cfg.d_model).astype(y.dtype)
    else:
      logits = layers.dense_general(cfg.tgt_vocab_size, ("embed", "vocab"), cfg.compute_dtype,
                                    name="logits")(y)
    return logits.astype(jnp.float32)


class EncoderDecoder(nn.Module):
  """Transformer encoder–decoder. Token ids: 0 PAD, 1 BOS, 2 EOS, 3 UNK.

  Packed batches pass segment ids (1, 2, ... per example, 0 = padding) and positions.
  """
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    tgt_embed = layers.embed(cfg.tgt_vocab_size, cfg.d_model, cfg.compute_dtype, "tgt_embed")
    src_embed = (tgt_embed if cfg.share_embeddings else
                 layers.embed(cfg.src_vocab_size, cfg.d_model, cfg.compute_dtype, "src_embed"))
    self.encoder = Encoder(cfg, src_embed)
    self.decoder = Decoder(cfg, tgt_embed)

  def __call__(self, src: jax.Array, tgt_in: jax.Array, *, src_segment_ids=None,
               src_positions=None, tgt_segment_ids=None, tgt_positions=None,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits: src [B, S], tgt_in [B, T] --> float32 [B, T, tgt_vocab]."""
    encoded = self.encode(src, src_segment_ids=src_segment_ids, src_positions=src_positions,
                          train=train)
    return self.decode(encoded, src, tgt_in, src_segment_ids=src_segment_ids,
                       tgt_segment_ids=tgt_segment_ids, tgt_positions=tgt_positions, train=train)

  def encode(self, src: jax.Array, *, src_segment_ids=None, src_positions=None,
             train: bool = False) -> jax.Array:
    """src [B, S] --> H_enc [B, S, d_model]."""
    return self.encoder(src, segment_ids=src_segment_ids, positions=src_positions, train=train)

  def decode(self, encoded: jax.Array | None, src: jax.Array, tgt_in: jax.Array, *,
             src_segment_ids=None, tgt_segment_ids=None, tgt_positions=None,
             train: bool = False, decode: bool = False,
             cache_length: int | None = None) -> jax.Array:
    """H_enc [B, S, d], tgt_in [B*G, T] --> logits float32 [B*G, T, tgt_vocab].

    decode=True: autoregressive mode over the 'cache' collection. The first call creates the
    cache (self-attention K/V of `cache_length` steps; cross-attention K/V from `encoded`);
    each later call takes one token per row (T = 1) at its `tgt_positions`, with encoded=None.
    """
    return self.decoder(encoded, src, tgt_in, src_segment_ids=src_segment_ids,
                        tgt_segment_ids=tgt_segment_ids, positions=tgt_positions, train=train,
                        decode=decode, cache_length=cache_length)


def build(model_cfg) -> EncoderDecoder:
  """A ConfigDict / mapping of TransformerConfig fields --> an EncoderDecoder module."""
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  values = dict(model_cfg)
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"unknown model field(s) {unknown}; valid: {', '.join(sorted(fields))}")
  return EncoderDecoder(TransformerConfig(**values))
