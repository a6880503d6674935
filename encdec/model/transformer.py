"""The encoder–decoder transformer: blocks, layer stacks (scanned or unrolled), the model."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.errors import ConfigError
from encdec.model import attention, layers, positions as positions_lib, schema
from encdec.model.schema import TransformerConfig  # re-exported: pylint: disable=unused-import

class Residual(nn.Module):
  """x + dropout(f(N(x))) (pre-norm) or N(x + dropout(f(x))) (post-norm) around a sublayer;
  N is a `norm_type` (layers.norm) with `norm_epsilon`."""
  norm: str
  dropout_rate: float | jax.Array
  dtype: Any
  norm_type: str = "layernorm"
  norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, sublayer: Callable[[jax.Array], jax.Array], *,
               deterministic: bool) -> jax.Array:
    ln = layers.norm(self.dtype, self.norm_type, name="norm", epsilon=self.norm_epsilon)
    y = sublayer(ln(x) if self.norm == "pre" else x)
    y = x + layers.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return y if self.norm == "pre" else ln(y)


def self_attention(cfg: TransformerConfig, causal: bool = False) -> attention.SelfAttention:
  return attention.SelfAttention(cfg.num_heads, cfg.heads_dim, cfg.attention_dropout_rate,
                                 cfg.compute_dtype, cfg.attention_bias, cfg.attention_impl,
                                 causal, name="self_attention")


def mlp_block(cfg: TransformerConfig) -> layers.MLP:
  return layers.MLP(cfg.d_ff, cfg.activation, cfg.dropout_rate, cfg.compute_dtype, cfg.mlp,
                    cfg.mlp_bias, name="mlp")


def residual(cfg: TransformerConfig, name: str) -> Residual:
  return Residual(cfg.norm, cfg.dropout_rate, cfg.compute_dtype, cfg.norm_type,
                  cfg.norm_epsilon, name=name)


class EncoderBlock(nn.Module):
  """Bidirectional (padding-masked) self-attention, then an MLP."""
  config: TransformerConfig
  train: bool = False
  collect: bool = False   # also return the output as the scan's per-layer output

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array,
               positions: positions_lib.SelfAttentionPositions):
    cfg, det = self.config, not self.train
    attn, mlp = self_attention(cfg), mlp_block(cfg)
    x = residual(cfg, "attention_residual")(
        x, lambda h: attn(h, mask, deterministic=det, positions=positions), deterministic=det)
    x = residual(cfg, "mlp_residual")(x, lambda h: mlp(h, deterministic=det),
                                      deterministic=det)
    return x, (x if self.collect else None)


class DecoderBlock(nn.Module):
  """Causal self-attention and cross-attention, arranged by the variant's `layout`, then an MLP.

  sequential: x + SA(x), then + XA; parallel: x + SA(h) + XA(h); merged: x + XA(h) where the
  variant attends over the target prefix and the source at once. has_cross=False: no XA.
  """
  config: TransformerConfig
  train: bool = False
  decode: bool = False
  cache_length: int | None = None
  has_cross: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array | None, self_mask: jax.Array,
               cross_mask: jax.Array, positions: positions_lib.SelfAttentionPositions):
    cfg, det, decode = self.config, not self.train, self.decode
    # Sub-modules are made here (not inside the residual's callback) to be named in this scope.
    self_attn, mlp = self_attention(cfg, causal=True), mlp_block(cfg)
    cross_attn = cfg.variant(cfg, name="cross_attention")
    sa = lambda h: self_attn(h, self_mask, deterministic=det, decode=decode,
                             cache_length=self.cache_length, positions=positions)
    xa = lambda h, **merged: cross_attn(h, memory, cross_mask, deterministic=det, decode=decode,
                                        **merged)
    layout = cfg.variant.layout if self.has_cross else "self_only"
    sublayers = {
        "sequential": [("self_attention_residual", sa), ("cross_attention_residual", xa)],
        "parallel": [("attention_residual", lambda h: sa(h) + xa(h))],
        "merged": [("attention_residual", lambda h: xa(h, self_mask=self_mask,
                                                       cache_length=self.cache_length,
                                                       self_positions=positions))],
        "self_only": [("self_attention_residual", sa)],
    }[layout]
    sublayers.append(("mlp_residual", lambda h: mlp(h, deterministic=det)))
    for name, sublayer in sublayers:
      x = residual(cfg, name)(x, sublayer, deterministic=det)
    return x, None


def layer_stack(block: type[nn.Module], num_layers: int, scan: bool, num_args: int,
                per_layer: list[dict[str, Any]] | None = None, remat: str = "none", **kwargs):
  """`num_layers` blocks applied in sequence: fn(x, *args) -> (x, per-layer outputs or None).

  With `scan`, parameters (and caches) are stacked on a leading 'layers' axis and the block is
  traced once (nn.scan), so compile time does not grow with depth. Blocks that differ
  (`per_layer` keyword arguments, e.g. which have cross-attention) are unrolled as layer_<i>.
  `remat` names a schema.REMAT_POLICIES entry: each block is wrapped in nn.remat with that policy.
  """
  per_layer = per_layer or [{}] * num_layers
  if remat != "none":
    policy = getattr(jax.checkpoint_policies, schema.REMAT_POLICIES[remat])
    block = nn.remat(block, policy=policy, prevent_cse=not scan)
  if scan and all(p == per_layer[0] for p in per_layer):
    stacked = nn.scan(block, variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast,) * num_args, length=num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})(
                          **kwargs, **per_layer[0], name="layers")
    return stacked
  blocks = [block(**kwargs, **per_layer[i], name=f"layer_{i}") for i in range(num_layers)]

  def apply(x, *args):
    outputs = []
    for b in blocks:
      x, y = b(x, *args)
      outputs.append(y)
    return x, (None if outputs[0] is None else jnp.stack(outputs))
  return apply


def _default_positions(tokens: jax.Array) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)


def embed_inputs(cfg: TransformerConfig, embed: nn.Embed, tokens: jax.Array,
                 positions: jax.Array, train: bool) -> jax.Array:
  """tokens [B, T] --> [B, T, d_model]: token embeddings (× sqrt(d_model) with
  `scale_embeddings`), absolute positions, `embedding_norm`, dropout. Call it from a compact
  method: its modules ('positions', 'embedding_norm') are named in the caller's scope."""
  x = embed(tokens)
  if cfg.scale_embeddings:
    x = x * jnp.sqrt(cfg.d_model).astype(x.dtype)
  x = positions_lib.PositionEncoding(cfg.position_encoding, cfg.max_len, cfg.compute_dtype,
                                     name="positions")(x, positions)
  if cfg.embedding_norm:
    x = layers.norm(cfg.compute_dtype, cfg.norm_type, name="embedding_norm",
                    epsilon=cfg.norm_epsilon)(x)
  return layers.Dropout(cfg.dropout_rate)(x, deterministic=not train)


def final_norm(cfg: TransformerConfig, x: jax.Array) -> jax.Array:
  """A stack's last norm: pre-norm stacks end with one (post-norm blocks already do)."""
  if cfg.norm != "pre":
    return x
  return layers.norm(cfg.compute_dtype, cfg.norm_type, name="norm", epsilon=cfg.norm_epsilon)(x)


class Encoder(nn.Module):
  """src [B, S] --> H_enc [B, S, d_model]: embeddings + positions, N encoder blocks.

  For variants that read every encoder layer: [B, S, N+1, d_model], embeddings first.
  """
  config: TransformerConfig
  embed: nn.Embed

  @nn.compact
  def __call__(self, src, *, segment_ids=None, positions=None, train: bool = False):
    cfg = self.config
    positions = _default_positions(src) if positions is None else positions
    x = embed_inputs(cfg, self.embed, src, positions, train)                # [B, S, d]
    self_positions = positions_lib.RelativePositions(cfg, causal=False,
                                                     name="relative_positions")(positions)
    every_layer = cfg.variant.reads_encoder_layers
    stack = layer_stack(EncoderBlock, cfg.num_encoder_layers, cfg.scan_layers, num_args=2,
                        remat=cfg.remat if train else "none", config=cfg, train=train,
                        collect=every_layer)
    out, per_layer = stack(x, attention.encoder_mask(src, segment_ids, cfg.pad_id),
                           self_positions)                                 # per_layer [L, B, S, d]
    if every_layer:   # the variant reads every layer: [B, S, L+1, d] (embeddings first)
      out = jnp.moveaxis(jnp.concatenate([x[None], per_layer]), 0, 2)
    return final_norm(cfg, out)


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
    y = embed_inputs(cfg, self.embed, tgt_in, positions, train)             # [B*G, T, d]
    self_positions = positions_lib.RelativePositions(cfg, causal=True, name="relative_positions")(
        positions, decode=decode, cache_length=cache_length)
    self_mask = None if decode else attention.decoder_mask(tgt_in.shape[1], tgt_segment_ids)
    cross_mask = attention.cross_mask(src, src_segment_ids, tgt_segment_ids, cfg.pad_id)
    memory = encoded
    if cfg.variant.shared_memory is not None:   # e.g. K/V projected once for all layers
      memory = cfg.variant.shared_memory(cfg, name="cross_attention_memory")(
          encoded, cross_mask, decode=decode)
    stack = layer_stack(DecoderBlock, cfg.num_decoder_layers, cfg.scan_layers, num_args=4,
                        per_layer=[dict(has_cross=c) for c in cfg.cross_layers()],
                        remat=cfg.remat if train else "none", config=cfg, train=train,
                        decode=decode, cache_length=cache_length)
    y, _ = stack(y, memory, self_mask, cross_mask, self_positions)
    y = final_norm(cfg, y)
    if cfg.tie_output:
      logits = self.embed.attend(y)
      if cfg.tied_logits_scale:
        logits = logits / jnp.sqrt(cfg.d_model).astype(y.dtype)
    else:
      logits = layers.dense_general(cfg.tgt_vocab_size, ("embed", "vocab"), cfg.compute_dtype,
                                    name="logits")(y)
    logits = logits.astype(jnp.float32)                                    # [B*G, T, V]
    if cfg.logits_bias:
      logits = logits + self.param("logits_bias", nn.with_logical_partitioning(
          nn.initializers.zeros, ("vocab",)), (cfg.tgt_vocab_size,), jnp.float32)
    return logits


class EncoderDecoder(nn.Module):
  """Transformer encoder–decoder. Special token ids: config.pad_id / bos_id / eos_id.

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


def unstack_layers(params: Any) -> Any:
  """Scanned parameters (a 'layers' subtree stacked on axis 0) --> the unrolled layout
  (layer_0, layer_1, ...), as `scan_layers=False` names them. Other subtrees are unchanged."""
  if not isinstance(params, dict):
    return params
  out = {key: unstack_layers(value) for key, value in params.items() if key != "layers"}
  if "layers" in params:
    num_layers = jax.tree_util.tree_leaves(params["layers"])[0].shape[0]
    for i in range(num_layers):
      out[f"layer_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], params["layers"])
  return out


def unrolled(module: EncoderDecoder, params: Any) -> tuple[EncoderDecoder, Any]:
  """The same model with its layers unrolled, and its parameters in that layout.

  Decoding uses it: a scanned decode step slices every layer's cache out of the stacked cache
  and writes it back each step (whole-cache copies); unrolled, each layer updates its own cache
  in place (1.4x faster beam search on the bench config, benchmarks/RESULTS.md).
  """
  if not module.config.scan_layers:
    return module, params
  config = dataclasses.replace(module.config, scan_layers=False)
  return EncoderDecoder(config), unstack_layers(params)


def build(model_cfg) -> EncoderDecoder:
  """A ConfigDict / mapping of TransformerConfig fields --> an EncoderDecoder module.

  Fields it does not give take their `preset`'s values (presets.py), then the defaults."""
  config = schema.from_mapping(model_cfg)
  for name in ("src_vocab_size", "tgt_vocab_size"):
    if not getattr(config, name):
      raise ConfigError(f"model.{name} is 0: build the model with assembly.build_model, which "
                        "takes vocabulary sizes from the task, or set it")
  config.variant.check_config(config)
  check_attention_impl(config)
  return EncoderDecoder(config)


def check_attention_impl(config: TransformerConfig) -> None:
  """A one-line ConfigError when `attention_impl="cudnn"` cannot run here (no CUDA GPU, a
  compute dtype or head size cuDNN lacks), rather than a traceback from inside the first trace.
  Checked at build, not with the other fields: configs are validated where no GPU may be."""
  problem = (attention.cudnn_problem(config.compute_dtype, config.heads_dim)
             if config.attention_impl == "cudnn" else None)
  if problem:
    raise ConfigError(f"model.attention_impl='cudnn': {problem}; use 'auto' (cuDNN where it "
                      "can run, else XLA) or 'xla'")
