"""Analytic model FLOPs of the encoder–decoder (for MFU), a pure function of config and shapes.

Convention (MaxText-style "model FLOPs"):
  * only matrix multiplications count, at 2 FLOPs per multiply-add; layer norms, softmax,
    activations, dropout, the loss and the optimizer update are not counted;
  * embedding lookups are not counted (a gather), the output logits are (a matmul, whether the
    projection is tied to the embedding or not);
  * attention counts QK^T and weights·V in full, including the masked half of causal
    self-attention (MaxText's default; a causal-aware count would halve the decoder's
    self-attention score FLOPs);
  * encoder self-attention runs over the source length S, decoder self-attention over the
    target length T; cross-attention is the variant's own count (`flops` of its class in
    encdec/model/cross_attention.py): queries of the T targets over its keys (the S source
    positions, or e.g. a variant's latents), its K/V projections, plus whatever it adds;
  * a train step is 3 × the forward pass (backward = 2 × forward), no rematerialisation
    counted. Padding tokens are counted like real ones (the benchmark has none).
"""
from __future__ import annotations

from typing import Any

from encdec import model
from encdec.model import schema

TRAIN_MULTIPLIER = 3  # forward + backward (2 × forward)


def model_config(model_cfg: Any) -> model.TransformerConfig:
  """A TransformerConfig from a config's `model` section (ConfigDict, dict or the config)."""
  if isinstance(model_cfg, model.TransformerConfig):
    return model_cfg
  return schema.from_mapping(model_cfg)


def forward_flops(model_cfg: Any, batch: int, src_len: int, tgt_len: int) -> dict[str, float]:
  """Forward-pass matmul FLOPs per component, summed over layers, for one batch.

  model_cfg: a ConfigDict, dict or TransformerConfig with the `model` fields.
  Returns {component: flops} plus "total"; the cross-attention components are the variant's.
  """
  cfg = model_config(model_cfg)
  d, d_ff, vocab = cfg.d_model, cfg.d_ff, cfg.tgt_vocab_size
  n_enc, n_dec = cfg.num_encoder_layers, cfg.num_decoder_layers
  inner = cfg.num_heads * cfg.heads_dim       # H * D: width of queries / attention outputs
  src_tokens, tgt_tokens = batch * src_len, batch * tgt_len
  mlp_matmuls = 2 if cfg.mlp == "dense" else 3   # gated MLPs: gate, up and down projections

  out = {
      # Encoder, per layer: fused QKV, scores + weighted values over S keys, output, MLP.
      "encoder_qkv": n_enc * 2 * src_tokens * d * 3 * inner,
      "encoder_attention": n_enc * 2 * 2 * src_tokens * src_len * inner,
      "encoder_out": n_enc * 2 * src_tokens * inner * d,
      "encoder_mlp": n_enc * mlp_matmuls * 2 * src_tokens * d * d_ff,
      # Decoder self-attention over T keys (causal, counted in full).
      "decoder_self_qkv": n_dec * 2 * tgt_tokens * d * 3 * inner,
      "decoder_self_attention": n_dec * 2 * 2 * tgt_tokens * tgt_len * inner,
      "decoder_self_out": n_dec * 2 * tgt_tokens * inner * d,
      # Cross-attention: what the variant computes (queries, K/V, attention, output, extras).
      **cfg.variant.flops(cfg, batch, src_len, tgt_len),
      "decoder_mlp": n_dec * mlp_matmuls * 2 * tgt_tokens * d * d_ff,
      "logits": 2 * tgt_tokens * d * vocab,
  }
  out = {k: float(v) for k, v in out.items()}
  out["total"] = sum(out.values())
  return out


def train_flops(model_cfg: Any, batch: int, src_len: int, tgt_len: int) -> float:
  """Model FLOPs of one train step (forward + backward) on a [batch, src_len/tgt_len] batch."""
  return TRAIN_MULTIPLIER * forward_flops(model_cfg, batch, src_len, tgt_len)["total"]
