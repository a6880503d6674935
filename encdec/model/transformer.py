"""The encoder–decoder transformer: blocks, layer stacks (scanned or unrolled), the model."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.errors import ConfigError
from encdec.model import attention, cross_attention, layers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What a layer keeps for the backward pass (jax.checkpoint policies); the rest is recomputed.
# none: everything (no remat); dots: matmul outputs without batch dims; full: only its input.
REMAT_POLICIES = {"none": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                  "full": jax.checkpoint_policies.nothing_saveable}


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
  cross_latents: int = 16          # "latent": learned latents the source is compressed to
  cross_window: int = 4            # "local": source positions either side of the predicted one
  cross_attention_layers: str = "all"   # which decoder layers have it: see cross_layers()
  share_embeddings: bool = False   # one table for source and target tokens
  tie_output: bool = True          # output projection = target embedding transposed
  position_encoding: str = "sinusoidal"   # | "learned"
  max_len: int = 512               # longest position for learned encodings
  norm: str = "pre"                # "pre" (x + f(LN(x))) | "post" (LN(x + f(x)))
  activation: str = "relu"
  dtype: str = "float32"           # compute dtype; params are always float32
  scan_layers: bool = True         # nn.scan over layers: compile time independent of depth
  remat: str = "none"              # rematerialise in the backward pass: see REMAT_POLICIES
  # Special token ids of the target vocabulary (and the source's PAD). Not config keys: they
  # come from the task's tokenizers (data.tokenizers.SpecialTokens, assembly.model_config).
  pad_id: int = dataclasses.field(default=0, metadata={"from_task": True})
  bos_id: int = dataclasses.field(default=1, metadata={"from_task": True})
  eos_id: int = dataclasses.field(default=2, metadata={"from_task": True})

  def __post_init__(self):
    cross_attention.get(self.cross_attention)
    _check_choice("position_encoding", self.position_encoding, ("sinusoidal", "learned"))
    _check_choice("norm", self.norm, ("pre", "post"))
    _check_choice("activation", self.activation, tuple(layers.ACTIVATIONS))
    _check_choice("dtype", self.dtype, tuple(DTYPES))
    _check_choice("remat", self.remat, tuple(REMAT_POLICIES))
    if self.d_model % self.num_heads and not self.head_dim:
      raise ConfigError(f"model.d_model={self.d_model} is not divisible by "
                       f"model.num_heads={self.num_heads}; set model.head_dim")
    self.cross_layers()
    if self.cross_latents <= 0 or self.cross_window <= 0:
      raise ConfigError("model.cross_latents and model.cross_window must be positive")
    if self.cross_attention == "gqa" and self.num_heads % max(self.cross_kv_heads, 1):
      raise ConfigError(f"model.cross_kv_heads={self.cross_kv_heads} must divide "
                       f"model.num_heads={self.num_heads}")
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ConfigError("model.share_embeddings needs src_vocab_size == tgt_vocab_size "
                       f"(got {self.src_vocab_size} and {self.tgt_vocab_size})")

  @property
  def heads_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def variant(self) -> type[nn.Module]:
    """The cross-attention class (its class attributes shape the decoder)."""
    return cross_attention.get(self.cross_attention)

  def cross_layers(self) -> tuple[bool, ...]:
    """Which decoder layers have cross-attention, from `cross_attention_layers`:
    "all", "first", "last", "middle" (layer L // 2), "every:K" (layers K-1, 2K-1, ...: every
    K-th counting from 1), or 0-based indices "0,2,5"."""
    spec, n = self.cross_attention_layers.replace(" ", ""), self.num_decoder_layers
    named = {"all": range(n), "first": [0], "last": [n - 1], "middle": [n // 2]}
    try:
      if spec in named:
        chosen = set(named[spec])
      elif spec.startswith("every:"):
        chosen = set(range(int(spec[6:]) - 1, n, int(spec[6:])))
      else:
        chosen = {int(i) for i in spec.split(",")}
    except ValueError:
      chosen = None
    if not chosen or not chosen <= set(range(n)):
      raise ConfigError(f"model.cross_attention_layers={self.cross_attention_layers!r}: use all, "
                       f"first, last, middle, every:K or indices in 0..{n - 1} like '0,2'")
    return tuple(i in chosen for i in range(n))


def _check_choice(field: str, value: str, valid: tuple[str, ...]):
  if value not in valid:
    raise ConfigError(f"unknown model.{field} {value!r}; valid: {', '.join(valid)}")


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
  collect: bool = False   # also return the output as the scan's per-layer output

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
               cross_mask: jax.Array):
    cfg, det, decode = self.config, not self.train, self.decode
    # Sub-modules are made here (not inside the residual's callback) to be named in this scope.
    self_attn = attention.SelfAttention(cfg.num_heads, cfg.heads_dim, cfg.attention_dropout_rate,
                                        cfg.compute_dtype, name="self_attention")
    cross_attn = cfg.variant(cfg, name="cross_attention")
    mlp = layers.MLP(cfg.d_ff, cfg.activation, cfg.dropout_rate, cfg.compute_dtype, name="mlp")
    sa = lambda h: self_attn(h, self_mask, deterministic=det, decode=decode,
                             cache_length=self.cache_length)
    xa = lambda h, **merged: cross_attn(h, memory, cross_mask, deterministic=det, decode=decode,
                                        **merged)
    layout = cfg.variant.layout if self.has_cross else "self_only"
    sublayers = {
        "sequential": [("self_attention_residual", sa), ("cross_attention_residual", xa)],
        "parallel": [("attention_residual", lambda h: sa(h) + xa(h))],
        "merged": [("attention_residual", lambda h: xa(h, self_mask=self_mask,
                                                       cache_length=self.cache_length))],
        "self_only": [("self_attention_residual", sa)],
    }[layout]
    sublayers.append(("mlp_residual", lambda h: mlp(h, deterministic=det)))
    for name, sublayer in sublayers:
      x = Residual(cfg.norm, cfg.dropout_rate, cfg.compute_dtype, name=name)(
          x, sublayer, deterministic=det)
    return x, None


def layer_stack(block: type[nn.Module], num_layers: int, scan: bool, num_args: int,
                per_layer: list[dict[str, Any]] | None = None, remat: str = "none", **kwargs):
  """`num_layers` blocks applied in sequence: fn(x, *args) -> (x, per-layer outputs or None).

  With `scan`, parameters (and caches) are stacked on a leading 'layers' axis and the block is
  traced once (nn.scan), so compile time does not grow with depth. Blocks that differ
  (`per_layer` keyword arguments, e.g. which have cross-attention) are unrolled as layer_<i>.
  `remat` names a REMAT_POLICIES entry: each block is wrapped in nn.remat with that policy.
  """
  per_layer = per_layer or [{}] * num_layers
  if remat != "none":
    block = nn.remat(block, policy=REMAT_POLICIES[remat], prevent_cse=not scan)
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
    x = layers.PositionEncoding(cfg.position_encoding, cfg.max_len, cfg.compute_dtype,
                                name="positions")(self.embed(src), positions)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    every_layer = cfg.variant.reads_encoder_layers
    stack = layer_stack(EncoderBlock, cfg.num_encoder_layers, cfg.scan_layers, num_args=1,
                        remat=cfg.remat if train else "none", config=cfg, train=train,
                        collect=every_layer)
    out, per_layer = stack(x, attention.encoder_mask(src, segment_ids))   # per_layer [L, B, S, d]
    if every_layer:   # the variant reads every layer: [B, S, L+1, d] (embeddings first)
      out = jnp.moveaxis(jnp.concatenate([x[None], per_layer]), 0, 2)
    return layers.norm(cfg.compute_dtype, name="norm")(out) if cfg.norm == "pre" else out


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
    cross_mask = attention.cross_mask(src, src_segment_ids, tgt_segment_ids)
    memory = encoded
    if cfg.variant.shared_memory is not None:   # e.g. K/V projected once for all layers
      memory = cfg.variant.shared_memory(cfg, name="cross_attention_memory")(
          encoded, cross_mask, decode=decode)
    stack = layer_stack(DecoderBlock, cfg.num_decoder_layers, cfg.scan_layers, num_args=3,
                        per_layer=[dict(has_cross=c) for c in cfg.cross_layers()],
                        remat=cfg.remat if train else "none", config=cfg, train=train,
                        decode=decode, cache_length=cache_length)
    y, _ = stack(y, memory, self_mask, cross_mask)
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
  """A ConfigDict / mapping of TransformerConfig fields --> an EncoderDecoder module."""
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  values = dict(model_cfg)
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ConfigError(f"unknown model field(s) {unknown}; valid: {', '.join(sorted(fields))}")
  return EncoderDecoder(TransformerConfig(**values))
