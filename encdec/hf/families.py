"""Hugging Face config.json <-> encdec model fields, for each supported architecture.

    family = families.detect(hf_config)                 # "t5", "bart" or "marian"
    fields = families.model_fields(family, hf_config, tensors)   # TransformerConfig fields
    special = families.special_tokens(family, hf_config)          # SpecialTokens of the vocab

Each family starts from its preset (encdec/model/presets.py) and sets what the checkpoint
decides: sizes, MLP kind and activation, norm epsilon, embedding scaling, how the output head
is tied, special ids. The decoder start token (`decoder_start_token_id`: PAD for T5 and Marian,
EOS for BART) is encdec's `bos_id`, the token decoding starts from.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from encdec.data.tokenizers import SpecialTokens
from encdec.errors import ConfigError

# architectures[0] --> family.
ARCHITECTURES = {
    "T5ForConditionalGeneration": "t5",
    "MT5ForConditionalGeneration": "t5",
    "BartForConditionalGeneration": "bart",
    "MarianMTModel": "marian",
}
# HF activation names --> schema.ACTIVATIONS (HF's "gelu" is the erf form, "gelu_new" tanh's).
ACTIVATIONS = {"relu": "relu", "gelu": "gelu_exact", "gelu_new": "gelu",
               "gelu_pytorch_tanh": "gelu", "swish": "silu", "silu": "silu"}
# T5's feed_forward_proj --> (model.mlp, model.activation). HF runs "gated-gelu" with gelu_new.
T5_MLPS = {"relu": ("dense", "relu"), "gelu": ("dense", "gelu_exact"),
           "gated-gelu": ("geglu", "gelu"), "gated-relu": ("reglu", "relu"),
           "gated-silu": ("swiglu", "silu"), "gated-swish": ("swiglu", "silu")}


def detect(config: Mapping[str, Any]) -> str:
  """The family of an HF config ("t5", "bart", "marian"); a one-line ConfigError otherwise."""
  names = list(config.get("architectures") or [])
  for name in names:
    if name in ARCHITECTURES:
      return ARCHITECTURES[name]
  raise ConfigError(f"unsupported architecture {names[0] if names else config.get('model_type')!r}"
                    f"; encdec imports {', '.join(ARCHITECTURES)}")


def _activation(name: str) -> str:
  if name not in ACTIVATIONS:
    raise ConfigError(f"unsupported activation_function {name!r}; encdec has "
                      f"{', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _same(config: Mapping[str, Any], a: str, b: str) -> Any:
  """config[a], which must equal config[b] (encdec uses one value for both stacks)."""
  if config[a] != config[b]:
    raise ConfigError(f"unsupported checkpoint: {a}={config[a]} differs from {b}={config[b]}; "
                      "encdec's encoder and decoder share this size")
  return config[a]


def embedding_names(family: str, tensors: Mapping[str, np.ndarray]) -> tuple[str, str]:
  """The tensors holding the (source, target) token embeddings. transformers stores a tied
  table once ('shared'); each stack's own `embed_tokens`, where stored, is what it reads
  (transformers 5 keeps them apart from 'shared' when tie_word_embeddings is false)."""
  prefix = "" if family == "t5" else "model."
  shared = f"{prefix}shared.weight"
  own = lambda stack: f"{prefix}{stack}.embed_tokens.weight"
  return tuple(own(s) if own(s) in tensors else shared for s in ("encoder", "decoder"))


def shares_embeddings(family: str, tensors: Mapping[str, np.ndarray]) -> bool:
  src, tgt = embedding_names(family, tensors)
  return src == tgt or (tensors[src].shape == tensors[tgt].shape
                        and np.array_equal(tensors[src], tensors[tgt]))


def untied_head(family: str, tensors: Mapping[str, np.ndarray]) -> bool:
  """Whether the output projection has its own weights: `lm_head.weight` stored and different
  from the target embedding (transformers stores tied weights once)."""
  if "lm_head.weight" not in tensors:
    return False
  embedding = tensors.get(embedding_names(family, tensors)[1])
  return embedding is None or not np.array_equal(embedding, tensors["lm_head.weight"])


def model_fields(family: str, config: Mapping[str, Any],
                 tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """TransformerConfig fields (preset included) of an HF checkpoint."""
  untied, shared = untied_head(family, tensors), shares_embeddings(family, tensors)
  if family == "t5":
    return _t5_fields(config, untied, shared)
  return _bart_marian_fields(family, config, untied, shared)


def _t5_fields(config: Mapping[str, Any], untied: bool, shared: bool) -> dict[str, Any]:
  proj = config.get("feed_forward_proj", "relu")
  if proj not in T5_MLPS:
    raise ConfigError(f"unsupported T5 feed_forward_proj {proj!r}; encdec has {', '.join(T5_MLPS)}")
  mlp, activation = T5_MLPS[proj]
  # T5 v1.0 scales the decoder output by d_model**-0.5 before a tied head; v1.1 neither ties
  # nor scales (older configs: tie_word_embeddings false; transformers 5: scale_decoder_outputs).
  scaled = config.get("scale_decoder_outputs", config.get("tie_word_embeddings", True) is not False)
  if untied and scaled:
    raise ConfigError("unsupported T5 checkpoint: an untied lm_head with scaled decoder outputs")
  return dict(
      preset="t5_v1_1", d_model=config["d_model"], num_heads=config["num_heads"],
      head_dim=config["d_kv"], d_ff=config["d_ff"], num_encoder_layers=config["num_layers"],
      num_decoder_layers=config.get("num_decoder_layers") or config["num_layers"],
      src_vocab_size=config["vocab_size"], tgt_vocab_size=config["vocab_size"],
      share_embeddings=shared, mlp=mlp, activation=activation,
      relative_buckets=config.get("relative_attention_num_buckets", 32),
      relative_max_distance=config.get("relative_attention_max_distance", 128),
      norm_epsilon=config.get("layer_norm_epsilon", 1e-6),
      dropout_rate=config.get("dropout_rate", 0.1),
      tie_output=not untied, tied_logits_scale=bool(scaled))


def _bart_marian_fields(family: str, config: Mapping[str, Any], untied: bool,
                        shared: bool) -> dict[str, Any]:
  vocab = config["vocab_size"]
  fields = dict(
      preset=family, d_model=config["d_model"],
      num_heads=_same(config, "encoder_attention_heads", "decoder_attention_heads"),
      d_ff=_same(config, "encoder_ffn_dim", "decoder_ffn_dim"),
      num_encoder_layers=config["encoder_layers"], num_decoder_layers=config["decoder_layers"],
      src_vocab_size=vocab, share_embeddings=bool(shared),
      tgt_vocab_size=vocab if shared else config.get("decoder_vocab_size") or vocab,
      activation=_activation(config.get("activation_function", "gelu")),
      scale_embeddings=bool(config.get("scale_embedding", False)),
      dropout_rate=config.get("dropout", 0.1),
      attention_dropout_rate=config.get("attention_dropout", 0.0),
      max_len=config["max_position_embeddings"], position_encoding="learned",
      tie_output=not untied, tied_logits_scale=False, logits_bias=True)
  if config.get("normalize_before") or config.get("add_final_layer_norm"):
    raise ConfigError(f"unsupported {family} checkpoint: pre-LN (normalize_before) variants "
                      "such as mBART are not imported")
  return fields


def special_tokens(family: str, config: Mapping[str, Any]) -> SpecialTokens:
  """The checkpoint's special ids; bos = the decoder start token."""
  pad, eos = config.get("pad_token_id"), config.get("eos_token_id")
  eos = eos[0] if isinstance(eos, list) else eos
  start = config.get("decoder_start_token_id")
  start = pad if start is None and family in ("t5", "marian") else start
  unk = {"t5": 2, "bart": 3, "marian": 1}[family]
  if None in (pad, eos, start):
    raise ConfigError(f"the checkpoint's config.json lacks pad_token_id, eos_token_id or "
                      f"decoder_start_token_id (got {pad}, {eos}, {start})")
  return SpecialTokens(pad=pad, bos=start, eos=eos, unk=unk)
