"""Named architectures (`model.preset`): each a table of `TransformerConfig` field defaults.

A preset is applied when a config is loaded (`encdec.config.load`), over the config file's model
fields and under command-line overrides, so `--config.model.preset=t5_v1_1
--config.model.mlp=swiglu` is T5 v1.1 with a SwiGLU MLP; config.json then holds the resolved
fields. `model.build` fills in the preset's fields that its mapping does not give. Sizes
(d_model, heads, layers, d_ff), dropout and vocabularies are never part of a preset, nor is
`share_embeddings` (T5, BART and Marian share one vocabulary between source and target; set it
where the task's tokenizers do). Pure data: importing it loads neither JAX nor Flax.
"""
from __future__ import annotations

from typing import Any

from encdec.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # Vaswani et al. 2017, "Attention Is All You Need" (and tensor2tensor's transformer_base):
    # post-LN, ReLU MLP with biases, sinusoidal positions, embeddings × sqrt(d_model), tied
    # output; tensor2tensor's attention projections have no biases.
    "vaswani": dict(norm="post", norm_type="layernorm", mlp="dense", activation="relu",
                    position_encoding="sinusoidal", attention_bias=False, mlp_bias=True,
                    scale_embeddings=True, embedding_norm=False, tie_output=True,
                    logits_bias=False),
    # T5 v1.1 (Raffel et al. 2020; HF google/t5-v1_1-base config.json: feed_forward_proj
    # "gated-gelu", tie_word_embeddings false, relative_attention_num_buckets 32,
    # relative_attention_max_distance 128): pre-RMSNorm without biases, GEGLU, no biases
    # anywhere, T5 relative position bias, untied output, unscaled embeddings.
    "t5_v1_1": dict(norm="pre", norm_type="rmsnorm", mlp="geglu", activation="gelu",
                    position_encoding="t5_relative", relative_buckets=32,
                    relative_max_distance=128, attention_bias=False, mlp_bias=False,
                    scale_embeddings=False, embedding_norm=False, tie_output=False,
                    logits_bias=False),
    # BART (Lewis et al. 2020; HF facebook/bart-large config.json: activation_function "gelu",
    # normalize_before false, scale_embedding false, max_position_embeddings 1024, and
    # BartLearnedPositionalEmbedding, layernorm_embedding): post-LN, learned positions, GELU,
    # biases on every projection, a LayerNorm after the embeddings, tied output. Its
    # final_logits_bias is an all-zero buffer, so logits_bias stays off. HF's "gelu" is the
    # exact (erf) GELU, torch.nn.LayerNorm's eps 1e-5, and the tied head is unscaled
    # (BartForConditionalGeneration: lm_head(x) + final_logits_bias).
    "bart": dict(norm="post", norm_type="layernorm", norm_epsilon=1e-5, mlp="dense",
                 activation="gelu_exact", position_encoding="learned", max_len=1024,
                 attention_bias=True, mlp_bias=True, scale_embeddings=False,
                 embedding_norm=True, tie_output=True, tied_logits_scale=False,
                 logits_bias=False),
    # Marian / OPUS-MT (Junczys-Dowmunt et al. 2018; HF Helsinki-NLP/opus-mt-en-de config.json:
    # activation_function "swish", normalize_before false, scale_embedding true,
    # static sinusoidal positions, final_logits_bias from the Marian model): post-LN,
    # SiLU (swish) MLP, biases, embeddings × sqrt(d_model), a final logits bias, tied output
    # without scaling (MarianMTModel: lm_head(x) + final_logits_bias), LayerNorm eps 1e-5.
    # (HF's sinusoids put sin | cos halves over other frequencies than ours: encdec.hf imports
    # them as a learned table.)
    "marian": dict(norm="post", norm_type="layernorm", norm_epsilon=1e-5, mlp="dense",
                   activation="silu", position_encoding="sinusoidal", attention_bias=True,
                   mlp_bias=True, scale_embeddings=True, embedding_norm=False, tie_output=True,
                   tied_logits_scale=False, logits_bias=True),
    # A 2023-era decoder's choices (LLaMA, Touvron et al. 2023; PaLM, Chowdhery et al. 2022):
    # pre-RMSNorm, SwiGLU (Shazeer 2020), RoPE in self-attention (Su et al. 2021), no biases.
    "modern": dict(norm="pre", norm_type="rmsnorm", mlp="swiglu", activation="silu",
                   position_encoding="rope", rope_base=10000.0, attention_bias=False,
                   mlp_bias=False, scale_embeddings=False, embedding_norm=False,
                   logits_bias=False),
}


def fields(preset: str) -> dict[str, Any]:
  """The model fields `preset` sets ("" = no preset: none); a one-line ConfigError for an
  unknown name."""
  if preset and preset not in PRESETS:
    raise ConfigError(f"unknown model.preset {preset!r}; valid: {', '.join(PRESETS)} "
                      "('' for none)")
  return dict(PRESETS.get(preset, {}))
