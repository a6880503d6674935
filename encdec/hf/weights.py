"""HF tensors <-> the encdec parameter tree, as one list of rules per family.

A `Rule` says how some HF tensors (torch layouts: a Linear's weight is [out, in]) become one
encdec parameter and back: Q/K/V become one stacked 'qkv' kernel [d, 3, H, D], K/V of
cross-attention one 'kv' kernel [d, 2, H, D], an output projection [H, D, d]. The same rules
run in both directions, so import and export cannot disagree. Rules name the unrolled layout
(encoder/layer_0/...); `to_params` stacks the layers when the model scans them.

Exact rewrites (each tested against transformers):
- T5 does not divide the attention logits by sqrt(head_dim); encdec does, so T5's query
  kernels are multiplied by sqrt(head_dim) on import (divided on export).
- BART's learned positions are looked up at position + 2: its table's first two rows are never
  read, so the table is sliced (and zero rows are put back on export).
- Marian's sinusoids (sin in the first half, cos in the second, XLM's frequencies) are not
  stored in the checkpoint; they are computed here as transformers does and imported as a
  `learned` table (a fine-tuning run then trains them, as BART's are).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import flax.traverse_util
import numpy as np

from encdec.errors import CheckpointError, ConfigError
from encdec.hf import families
from encdec.model.schema import TransformerConfig

Arrays = Sequence[np.ndarray]


@dataclasses.dataclass(frozen=True)
class Rule:
  """HF tensors `names` <--> the encdec parameter at `path` ("/"-joined, unrolled layers)."""
  path: str
  names: tuple[str, ...]
  load: Callable[[Arrays], np.ndarray]                 # HF arrays --> the parameter
  save: Callable[[np.ndarray], tuple[np.ndarray, ...]]  # the parameter --> HF arrays


def copy(path: str, name: str) -> Rule:
  return Rule(path, (name,), lambda a: a[0], lambda p: (p,))


def linear(path: str, name: str, shape: tuple[int, ...], num_in: int = 1,
           scale: float = 1.0) -> Rule:
  """A torch Linear weight [out, in] <--> a kernel of `shape` whose first `num_in` axes are
  the input ones (e.g. [d, H, D] for queries, [H, D, d] for an output projection)."""
  fan_in = math.prod(shape[:num_in])
  return Rule(path, (name,), lambda a: (a[0].T * scale).reshape(shape),
              lambda p: ((p.reshape(fan_in, -1) / scale).T,))


def stacked(path: str, names: Sequence[str], heads: int, head_dim: int,
            scales: Sequence[float]) -> Rule:
  """Linear weights [H*D, d] of Q/K/V (or K/V) <--> one kernel [d, len(names), H, D]."""
  def load(arrays):
    return np.stack([(w.T * s).reshape(-1, heads, head_dim) for w, s in zip(arrays, scales)],
                    axis=1)

  def save(kernel):
    return tuple((kernel[:, i].reshape(kernel.shape[0], -1) / s).T for i, s in enumerate(scales))
  return Rule(path, tuple(names), load, save)


def stacked_bias(path: str, names: Sequence[str], heads: int, head_dim: int,
                 squeeze: bool = False) -> Rule:
  """Biases [H*D] of Q/K/V (or K/V) <--> one [len(names), H, D] (`squeeze`, one name: [H, D])."""
  def load(arrays):
    out = np.stack([b.reshape(heads, head_dim) for b in arrays])
    return out[0] if squeeze else out
  return Rule(path, tuple(names), load,
              lambda p: tuple(b.reshape(-1) for b in (p[None] if squeeze else p)))


def offset_table(path: str, name: str, offset: int) -> Rule:
  """A position table read at position + `offset` (BART: 2) <--> the rows actually read."""
  return Rule(path, (name,), lambda a: a[0][offset:],
              lambda p: (np.concatenate([np.zeros((offset, p.shape[1]), p.dtype), p]),))


def marian_sinusoids(num_positions: int, dim: int) -> np.ndarray:
  """transformers' MarianSinusoidalPositionalEmbedding table [num_positions, dim]: angle
  pos / 10000^(2 floor(j/2) / dim); sin of the even j in the first half, cos of the odd j in
  the second (computed in float64, stored as float32, as transformers does)."""
  j = np.arange(dim)
  angles = np.arange(num_positions)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None]
  half = dim // 2 + dim % 2
  out = np.empty((num_positions, dim), np.float32)
  out[:, :half] = np.sin(angles[:, 0::2])
  out[:, half:] = np.cos(angles[:, 1::2])
  return out


def computed(path: str, table: np.ndarray, what: str) -> Rule:
  """A parameter the checkpoint does not store (it is recomputed by transformers): imported as
  `table`; exported only if it still equals it (else a ConfigError: HF would ignore it)."""
  def save(p):
    if not np.allclose(p, table, atol=1e-6):
      raise ConfigError(f"{path} ({what}) was changed by training, but transformers recomputes "
                        "it; it cannot be exported (freeze it with optim.trainable)")
    return ()
  return Rule(path, (), lambda _: table, save)


# ------------------------------------------------------------------------------ families
def attention_rules(prefix: str, hf: str, names: Sequence[str], out_name: str, cfg,
                    cross: bool, bias: bool, q_scale: float) -> list[Rule]:
  """Self- (one qkv kernel) or cross-attention (query + kv kernels) at encdec `prefix` from HF
  projections `hf`.<name>.weight (and .bias); the query kernel is multiplied by `q_scale`."""
  if bias and q_scale != 1.0:
    raise ConfigError("attention biases with rescaled queries are not supported")
  h, d_head, d = cfg.num_heads, cfg.heads_dim, cfg.d_model
  w = lambda n: f"{hf}.{n}.weight"
  b = lambda n: f"{hf}.{n}.bias"
  q, k, v = names
  if cross:
    rules = [linear(f"{prefix}/query/kernel", w(q), (d, h, d_head), scale=q_scale),
             stacked(f"{prefix}/kv/kernel", [w(k), w(v)], h, d_head, (1.0, 1.0))]
    biases = [stacked_bias(f"{prefix}/query/bias", [b(q)], h, d_head, squeeze=True),
              stacked_bias(f"{prefix}/kv/bias", [b(k), b(v)], h, d_head)]
  else:
    rules = [stacked(f"{prefix}/qkv/kernel", [w(q), w(k), w(v)], h, d_head, (q_scale, 1.0, 1.0))]
    biases = [stacked_bias(f"{prefix}/qkv/bias", [b(q), b(k), b(v)], h, d_head)]
  rules.append(linear(f"{prefix}/out/kernel", w(out_name), (h, d_head, d), num_in=2))
  if bias:
    rules += biases + [copy(f"{prefix}/out/bias", b(out_name))]
  return rules


def mlp_rules(prefix: str, hf_names: Mapping[str, str], cfg, bias: bool) -> list[Rule]:
  """encdec MLP kernels (wi | wi_0, wi_1; wo) from HF Linear weights named by `hf_names`."""
  rules = []
  for ours, theirs in hf_names.items():
    rules.append(linear(f"{prefix}/{ours}/kernel", f"{theirs}.weight",
                        (cfg.d_ff, cfg.d_model) if ours == "wo" else (cfg.d_model, cfg.d_ff)))
    if bias:
      rules.append(copy(f"{prefix}/{ours}/bias", f"{theirs}.bias"))
  return rules


def norm_rules(prefix: str, hf: str, bias: bool) -> list[Rule]:
  return [copy(f"{prefix}/scale", f"{hf}.weight")] + (
      [copy(f"{prefix}/bias", f"{hf}.bias")] if bias else [])


def embedding_rules(cfg: TransformerConfig, family: str,
                    tensors: Mapping[str, np.ndarray] | None) -> list[Rule]:
  """Token embeddings: one table when shared (stored as 'shared'), else one per stack from the
  tensors each stack reads (families.embedding_names); export writes them the same way."""
  prefix = "" if family == "t5" else "model."
  if cfg.share_embeddings:
    return [copy("tgt_embed/embedding", f"{prefix}shared.weight")]
  src, tgt = (families.embedding_names(family, tensors) if tensors is not None else
              (f"{prefix}encoder.embed_tokens.weight", f"{prefix}decoder.embed_tokens.weight"))
  return [copy("src_embed/embedding", src), copy("tgt_embed/embedding", tgt)]


def head_rules(cfg: TransformerConfig) -> list[Rule]:
  """An untied output projection ('lm_head'); a tied one is the target embedding."""
  if cfg.tie_output:
    return []
  return [linear("decoder/logits/kernel", "lm_head.weight", (cfg.d_model, cfg.tgt_vocab_size))]


def t5_rules(cfg: TransformerConfig, tensors=None) -> list[Rule]:
  """T5ForConditionalGeneration (v1.0 and v1.1) / MT5ForConditionalGeneration."""
  qs = math.sqrt(cfg.heads_dim)
  mlp = {**({"wi": "wi"} if cfg.mlp == "dense" else {"wi_0": "wi_0", "wi_1": "wi_1"}), "wo": "wo"}
  rules = embedding_rules(cfg, "t5", tensors)
  for stack, layers in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    rules += [copy(f"{stack}/relative_positions/rel_embedding",
                   f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
              copy(f"{stack}/norm/scale", f"{stack}.final_layer_norm.weight")]
    for i in range(layers):
      ours, hf = f"{stack}/layer_{i}", f"{stack}.block.{i}.layer"
      sa = "attention_residual" if stack == "encoder" else "self_attention_residual"
      rules += attention_rules(f"{ours}/self_attention", f"{hf}.0.SelfAttention", "qkv", "o",
                               cfg, cross=False, bias=False, q_scale=qs)
      rules += norm_rules(f"{ours}/{sa}/norm", f"{hf}.0.layer_norm", bias=False)
      ff = 1
      if stack == "decoder":
        rules += attention_rules(f"{ours}/cross_attention", f"{hf}.1.EncDecAttention", "qkv", "o",
                                 cfg, cross=True, bias=False, q_scale=qs)
        rules += norm_rules(f"{ours}/cross_attention_residual/norm", f"{hf}.1.layer_norm", False)
        ff = 2
      rules += mlp_rules(f"{ours}/mlp",
                         {k: f"{hf}.{ff}.DenseReluDense.{v}" for k, v in mlp.items()}, cfg,
                         bias=False)
      rules += norm_rules(f"{ours}/mlp_residual/norm", f"{hf}.{ff}.layer_norm", bias=False)
  return rules + head_rules(cfg)


def bart_marian_rules(cfg: TransformerConfig, family: str, tensors=None) -> list[Rule]:
  """BartForConditionalGeneration / MarianMTModel (post-LN, biases everywhere)."""
  rules = embedding_rules(cfg, family, tensors)
  rules.append(Rule("decoder/logits_bias", ("final_logits_bias",), lambda a: a[0].reshape(-1),
                    lambda p: (p.reshape(1, -1),)))
  rules += head_rules(cfg)
  qkv = ("q_proj", "k_proj", "v_proj")
  for stack, layers in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    if family == "bart":
      rules += [offset_table(f"{stack}/positions/table",
                             f"model.{stack}.embed_positions.weight", 2),
                *norm_rules(f"{stack}/embedding_norm", f"model.{stack}.layernorm_embedding", True)]
    else:
      rules.append(computed(f"{stack}/positions/table", marian_sinusoids(cfg.max_len, cfg.d_model),
                            "Marian's sinusoidal positions"))
    for i in range(layers):
      ours, hf = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
      sa = "attention_residual" if stack == "encoder" else "self_attention_residual"
      rules += attention_rules(f"{ours}/self_attention", f"{hf}.self_attn", qkv, "out_proj", cfg,
                               cross=False, bias=True, q_scale=1.0)
      rules += norm_rules(f"{ours}/{sa}/norm", f"{hf}.self_attn_layer_norm", bias=True)
      if stack == "decoder":
        rules += attention_rules(f"{ours}/cross_attention", f"{hf}.encoder_attn", qkv, "out_proj",
                                 cfg, cross=True, bias=True, q_scale=1.0)
        rules += norm_rules(f"{ours}/cross_attention_residual/norm",
                            f"{hf}.encoder_attn_layer_norm", bias=True)
      rules += mlp_rules(f"{ours}/mlp", {"wi": f"{hf}.fc1", "wo": f"{hf}.fc2"}, cfg, bias=True)
      rules += norm_rules(f"{ours}/mlp_residual/norm", f"{hf}.final_layer_norm", bias=True)
  return rules


def rules_for(family: str, cfg: TransformerConfig,
              tensors: Mapping[str, np.ndarray] | None = None) -> list[Rule]:
  """The family's rules; `tensors` (on import) decide where untied embeddings are stored."""
  return t5_rules(cfg, tensors) if family == "t5" else bart_marian_rules(cfg, family, tensors)


# ------------------------------------------------------------------------------ conversion
def to_params(family: str, cfg: TransformerConfig, tensors: Mapping[str, np.ndarray]) -> Any:
  """HF tensors --> the encdec parameter tree of `cfg` (layers stacked if it scans them).

  A tensor the rules need and the checkpoint lacks is a one-line CheckpointError naming it."""
  flat = {}
  for rule in rules_for(family, cfg, tensors):
    missing = [n for n in rule.names if n not in tensors]
    if missing:
      raise CheckpointError(f"the checkpoint lacks tensor {missing[0]!r} (needed for {rule.path})")
    try:
      flat[rule.path] = np.asarray(rule.load([tensors[n] for n in rule.names]), np.float32)
    except ValueError as e:   # a reshape to the config's sizes
      shapes = ", ".join(f"{n} {tensors[n].shape}" for n in rule.names)
      raise ConfigError(f"the checkpoint's tensors do not fit its config.json: {shapes} cannot "
                        f"become {rule.path} ({e})") from e
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  return stack_layers(params) if cfg.scan_layers else params


def from_params(family: str, cfg: TransformerConfig, params: Any) -> dict[str, np.ndarray]:
  """The encdec parameter tree of `cfg` --> HF tensors (tied weights stored once)."""
  from encdec.model import transformer  # pylint: disable=import-outside-toplevel (jax)
  flat = flax.traverse_util.flatten_dict(transformer.unstack_layers(params), sep="/")
  tensors = {}
  for rule in rules_for(family, cfg):
    tensors.update(zip(rule.names, rule.save(np.asarray(flat[rule.path], np.float32))))
  return tensors


def stack_layers(params: Any) -> Any:
  """The unrolled layout (layer_0, layer_1, ...) --> scanned ('layers' stacked on axis 0): the
  inverse of transformer.unstack_layers."""
  if not isinstance(params, dict):
    return params
  layers = sorted((k for k in params if k.startswith("layer_")), key=lambda k: int(k[6:]))
  out = {k: stack_layers(v) for k, v in params.items() if not k.startswith("layer_")}
  if layers:
    per_layer = [flax.traverse_util.flatten_dict(params[k]) for k in layers]
    out["layers"] = flax.traverse_util.unflatten_dict(
        {path: np.stack([p[path] for p in per_layer]) for path in per_layer[0]})
  return out
