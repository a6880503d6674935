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
    target length T, cross-attention over T queries × S keys, plus the cross-attention K/V
    projections of the encoder output (S positions per example, `Hk` K/V heads);
  * a train step is 3 × the forward pass (backward = 2 × forward), no rematerialisation
    counted. Padding tokens are counted like real ones (the benchmark has none).
"""
from __future__ import annotations

from typing import Any, Mapping

TRAIN_MULTIPLIER = 3  # forward + backward (2 × forward)


def _field(cfg: Any, name: str, default: Any = None) -> Any:
  if isinstance(cfg, Mapping):
    return cfg.get(name, default)
  return getattr(cfg, name, default)


def cross_kv_heads(model_cfg: Any) -> int:
  """K/V heads of the cross-attention variant (0: it has no cross-attention)."""
  variant = _field(model_cfg, "cross_attention", "mha")
  heads = _field(model_cfg, "num_heads")
  if variant in ("mha", "gated"):
    return heads
  if variant == "mqa":
    return 1
  if variant == "gqa":
    return _field(model_cfg, "cross_kv_heads", 0) or max(heads // 2, 1)
  if variant == "none":
    return 0
  raise ValueError(f"benchmarks/flops.py has no FLOP count for cross_attention {variant!r}; "
                   "add its K/V head count to cross_kv_heads()")


def forward_flops(model_cfg: Any, batch: int, src_len: int, tgt_len: int) -> dict[str, float]:
  """Forward-pass matmul FLOPs per component, summed over layers, for one batch.

  model_cfg: a ConfigDict, dict or TransformerConfig with the `model` fields.
  Returns {component: flops} plus "total".
  """
  d = _field(model_cfg, "d_model")
  heads = _field(model_cfg, "num_heads")
  head_dim = _field(model_cfg, "head_dim", 0) or d // heads
  d_ff = _field(model_cfg, "d_ff")
  vocab = _field(model_cfg, "tgt_vocab_size")
  n_enc = _field(model_cfg, "num_encoder_layers")
  n_dec = _field(model_cfg, "num_decoder_layers")
  inner = heads * head_dim                    # H * D: width of queries / attention outputs
  kv_inner = cross_kv_heads(model_cfg) * head_dim
  has_cross = _field(model_cfg, "cross_attention", "mha") != "none"
  src_tokens, tgt_tokens = batch * src_len, batch * tgt_len

  out = {
      # Encoder, per layer: fused QKV, scores + weighted values over S keys, output, MLP.
      "encoder_qkv": n_enc * 2 * src_tokens * d * 3 * inner,
      "encoder_attention": n_enc * 2 * 2 * src_tokens * src_len * inner,
      "encoder_out": n_enc * 2 * src_tokens * inner * d,
      "encoder_mlp": n_enc * 2 * 2 * src_tokens * d * d_ff,
      # Decoder self-attention over T keys (causal, counted in full).
      "decoder_self_qkv": n_dec * 2 * tgt_tokens * d * 3 * inner,
      "decoder_self_attention": n_dec * 2 * 2 * tgt_tokens * tgt_len * inner,
      "decoder_self_out": n_dec * 2 * tgt_tokens * inner * d,
      # Cross-attention: queries from T targets, K/V projected from the S encoder outputs.
      "cross_q": has_cross * n_dec * 2 * tgt_tokens * d * inner,
      "cross_kv": n_dec * 2 * src_tokens * d * 2 * kv_inner,
      "cross_attention": has_cross * n_dec * 2 * 2 * tgt_tokens * src_len * inner,
      "cross_out": has_cross * n_dec * 2 * tgt_tokens * inner * d,
      "decoder_mlp": n_dec * 2 * 2 * tgt_tokens * d * d_ff,
      "logits": 2 * tgt_tokens * d * vocab,
  }
  out = {k: float(v) for k, v in out.items()}
  out["total"] = sum(out.values())
  return out


def train_flops(model_cfg: Any, batch: int, src_len: int, tgt_len: int) -> float:
  """Model FLOPs of one train step (forward + backward) on a [batch, src_len/tgt_len] batch."""
  return TRAIN_MULTIPLIER * forward_flops(model_cfg, batch, src_len, tgt_len)["total"]
