"""The model's hyper-parameters: `TransformerConfig`, the one schema of `cfg.model`.

`encdec.config.base().model` is derived from these fields and defaults, so adding a model
option is one field here (plus the code that reads it). This module imports neither JAX nor
Flax: configs are validated before anything heavy is loaded.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from encdec.errors import ConfigError
from encdec.model import presets
from encdec.registry import Registry

# Cross-attention variants (model.cross_attention): one line per variant, each a small module
# in encdec/model/cross_attention.py.
CROSS_ATTENTION = Registry("model.cross_attention", {
    "mha": "encdec.model.cross_attention:MultiHeadCrossAttention",
    "mqa": "encdec.model.cross_attention:MultiQueryCrossAttention",
    "gqa": "encdec.model.cross_attention:GroupedQueryCrossAttention",
    "gated": "encdec.model.cross_attention:GatedCrossAttention",
    "shared_kv": "encdec.model.cross_attention:SharedKVCrossAttention",
    "latent": "encdec.model.cross_attention:LatentCrossAttention",
    "all_layers": "encdec.model.cross_attention:AllLayersCrossAttention",
    "parallel": "encdec.model.cross_attention:ParallelCrossAttention",
    "merged": "encdec.model.cross_attention:MergedAttention",
    "local": "encdec.model.cross_attention:LocalCrossAttention",
    "none": "encdec.model.cross_attention:NoCrossAttention",
})

# The choices of the string fields. Where a choice names a JAX object, the name is its
# attribute: jax.nn.<activation>, jax.checkpoint_policies.<policy> (None: no remat).
# Position schemes (encdec/model/positions.py). Absolute ones are added to the embeddings of
# both stacks (cross-attention then sees them through the encoder output and decoder stream);
# the others act in self-attention only, as in T5 and RoPE models: cross-attention gets no
# position information from them.
ABSOLUTE_POSITIONS = ("sinusoidal", "learned")
RELATIVE_POSITIONS = ("t5_relative", "rope", "alibi", "none")
POSITION_ENCODINGS = ABSOLUTE_POSITIONS + RELATIVE_POSITIONS
NORMS = ("pre", "post")
NORM_TYPES = ("layernorm", "rmsnorm")
# dense: act(x W_i) W_o; gated (GLU variants, Shazeer 2020): (act(x W_gate) * x W_up) W_o with
# the activation the name says (geglu: gelu, swiglu: silu, reglu: relu).
MLPS = ("dense", "geglu", "swiglu", "reglu")
GATED_MLP_ACTIVATIONS = {"geglu": "gelu", "swiglu": "silu", "reglu": "relu"}
# gelu: the tanh approximation (jax.nn.gelu's default; HF's "gelu_new", T5 v1.1's gated GELU);
# gelu_exact: the erf form (HF's "gelu", BART's).
ACTIVATIONS = ("relu", "gelu", "gelu_exact", "silu")
PRESETS = ("",) + tuple(presets.PRESETS)   # "": none; the tables are in presets.py
# Compute dtypes; params are float32 whatever it is (master weights). auto: bfloat16 where
# the backend is a GPU or TPU, float32 on CPU (TransformerConfig.compute_dtype resolves it).
DTYPES = ("auto", "float32", "bfloat16")
# Who computes attention (attention.dot_product_attention): xla: our einsums; jax:
# jax.nn.dot_product_attention's XLA implementation; cudnn: its cuDNN (flash) one, checked at
# model build; auto: cuDNN for the calls it can run on a GPU, else ours.
ATTENTION_IMPLS = ("xla", "jax", "cudnn", "auto")
# What a layer keeps for the backward pass; the rest is recomputed. none: everything (no
# remat); dots: matmul outputs without batch dims; full: only its input.
REMAT_POLICIES = {"none": None, "dots": "dots_with_no_batch_dims_saveable",
                  "full": "nothing_saveable"}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the model (hashable, so modules can hold it). See configs/."""
  src_vocab_size: int = 0          # 0 in a config: the task's (assembly.model_config)
  tgt_vocab_size: int = 0
  d_model: int = 256
  num_heads: int = 4
  head_dim: int = 0                # 0: d_model // num_heads
  d_ff: int = 1024
  num_encoder_layers: int = 3
  num_decoder_layers: int = 3
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  cross_attention: str = "mha"     # a name in CROSS_ATTENTION
  cross_kv_heads: int = 0          # "gqa": K/V heads (dividing num_heads); 0: num_heads // 2
  cross_latents: int = 16          # "latent": learned latents the source is compressed to
  cross_window: int = 4            # "local": source positions either side of the predicted one
  cross_attention_layers: str = "all"   # which decoder layers have it: see cross_layers()
  share_embeddings: bool = False   # one table for source and target tokens
  tie_output: bool = True          # output projection = target embedding transposed
  tied_logits_scale: bool = True   # tied: logits / sqrt(d_model) (T5 v1.0; not BART, Marian)
  preset: str = ""                 # a name in presets.PRESETS: its field defaults, applied at load
  position_encoding: str = "sinusoidal"   # a name in POSITION_ENCODINGS
  max_len: int = 512               # longest position for learned encodings
  relative_buckets: int = 32       # "t5_relative": buckets of relative distance (half per
  relative_max_distance: int = 128  # direction in the encoder); farther ones share the last
  rope_base: float = 10000.0       # "rope": wavelengths base ** (2i / head_dim)
  norm: str = "pre"                # placement: "pre" (x + f(N(x))) | "post" (N(x + f(x)))
  norm_type: str = "layernorm"     # N: "layernorm" | "rmsnorm" (no mean, no bias; T5)
  norm_epsilon: float = 1e-6       # added to the variance in N (Flax's default; BART/Marian 1e-5)
  mlp: str = "dense"               # a name in MLPS
  activation: str = "relu"         # a name in ACTIVATIONS (the "dense" MLP's)
  attention_bias: bool = False     # biases on the Q/K/V/output projections (BART, Marian)
  mlp_bias: bool = True            # biases on the MLP's projections
  scale_embeddings: bool = False   # token embeddings × sqrt(d_model) (Vaswani, Marian)
  embedding_norm: bool = False     # a norm after embeddings + positions (BART)
  logits_bias: bool = False        # a learned bias on the output logits (Marian)
  dtype: str = "auto"              # compute dtype (DTYPES); params are always float32
  attention_impl: str = "xla"      # a name in ATTENTION_IMPLS
  scan_layers: bool = True         # nn.scan over layers: compile time independent of depth
  remat: str = "none"              # rematerialise in the backward pass: see REMAT_POLICIES
  # Special token ids of the target vocabulary (and the source's PAD). Not config keys: they
  # come from the task's tokenizers (data.tokenizers.SpecialTokens, assembly.model_config).
  pad_id: int = dataclasses.field(default=0, metadata={"from_task": True})
  bos_id: int = dataclasses.field(default=1, metadata={"from_task": True})
  eos_id: int = dataclasses.field(default=2, metadata={"from_task": True})

  def __post_init__(self):
    check_fields(self)

  @property
  def heads_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    """`dtype` as a numpy dtype ("auto" resolved: resolved_dtype)."""
    import jax  # pylint: disable=import-outside-toplevel (schema stays light)
    return jax.numpy.dtype(resolved_dtype(self.dtype))

  @property
  def variant(self) -> type:
    """The cross-attention class (its class attributes shape the decoder)."""
    return CROSS_ATTENTION[self.cross_attention]

  def cross_layers(self) -> tuple[bool, ...]:
    """Which decoder layers have cross-attention, from `cross_attention_layers`:
    "all", "first", "last", "middle" (layer L // 2), "every:K" (layers K-1, 2K-1, ...: every
    K-th counting from 1), or 0-based indices "0,2,5"."""
    spec, n = self.cross_attention_layers.replace(" ", ""), self.num_decoder_layers
    named = {"all": range(n), "first": [0], "last": [n - 1], "middle": [n // 2]}
    try:
      if spec in named:
        chosen = set(named[spec])
      elif spec.startswith("every:") and int(spec[6:]) > 0:
        chosen = set(range(int(spec[6:]) - 1, n, int(spec[6:])))
      else:
        chosen = {int(i) for i in spec.split(",")}
    except ValueError:
      chosen = None
    if not chosen or not chosen <= set(range(n)):
      raise ConfigError(f"model.cross_attention_layers={self.cross_attention_layers!r}: use "
                        f"all, first, last, middle, every:K or indices in 0..{n - 1} like '0,2'")
    return tuple(i in chosen for i in range(n))


def from_mapping(model_cfg: Any) -> TransformerConfig:
  """A ConfigDict or mapping of TransformerConfig fields --> the config. Fields it does not give
  take their `preset`'s values (presets.py), then the defaults; an unknown field is a ConfigError."""
  values = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
  values = {**presets.fields(values.get("preset", "")), **values}
  known = {f.name for f in dataclasses.fields(TransformerConfig)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ConfigError(f"unknown model field(s) {unknown}; valid: {', '.join(sorted(known))}")
  return TransformerConfig(**values)


def fields(from_task: bool = False) -> dict[str, Any]:
  """The config keys of `cfg.model` with their defaults (from_task=True: the ids the task
  fills in instead)."""
  return {f.name: f.default for f in dataclasses.fields(TransformerConfig)
          if bool(f.metadata.get("from_task")) == from_task}


# (field, lowest allowed value, whether the lowest is allowed); vocab sizes 0 mean "the task's".
_RANGES = [("src_vocab_size", 0, True), ("tgt_vocab_size", 0, True), ("d_model", 0, False),
           ("num_heads", 0, False), ("head_dim", 0, True), ("d_ff", 0, False),
           ("num_encoder_layers", 0, False), ("num_decoder_layers", 0, False),
           ("cross_kv_heads", 0, True), ("cross_latents", 0, False), ("cross_window", 0, False),
           ("max_len", 0, False), ("relative_buckets", 0, False),
           ("relative_max_distance", 0, False), ("rope_base", 1.0, False),
           ("norm_epsilon", 0.0, False),
           ("pad_id", 0, True), ("bos_id", 0, True), ("eos_id", 0, True)]
_CHOICES = {"preset": PRESETS, "position_encoding": POSITION_ENCODINGS, "norm": NORMS,
            "norm_type": NORM_TYPES, "mlp": MLPS, "activation": ACTIVATIONS, "dtype": DTYPES,
            "attention_impl": ATTENTION_IMPLS, "remat": tuple(REMAT_POLICIES)}


def resolved_dtype(dtype: str) -> str:
  """A DTYPES name with "auto" resolved by JAX's backend (the one place it is): bfloat16 on a
  GPU or TPU, float32 on CPU. A training run records the resolved name in its config.json
  (train/loop.py), so it resumes in the dtype it started in on any machine."""
  if dtype != "auto":
    return dtype
  import jax  # pylint: disable=import-outside-toplevel (schema stays light)
  accelerator = jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
  return "bfloat16" if accelerator else "float32"


def check_fields(cfg: TransformerConfig) -> None:
  """A one-line ConfigError for a value out of range, an unknown choice or an inconsistency."""
  for name, low, inclusive in _RANGES:
    value = getattr(cfg, name)
    if value < low or (value == low and not inclusive):
      bound = f">= {low}" if inclusive else f"> {low}"
      raise ConfigError(f"model.{name} must be {bound}, got {value}")
  for name in ("dropout_rate", "attention_dropout_rate"):   # traced in a batch (not checked)
    if isinstance(getattr(cfg, name), numbers.Real) and not 0.0 <= getattr(cfg, name) < 1.0:
      raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(cfg, name)}")
  presets.fields(cfg.preset)   # its own message (the empty name is valid)
  for name, valid in _CHOICES.items():
    if getattr(cfg, name) not in valid:
      raise ConfigError(f"unknown model.{name} {getattr(cfg, name)!r}; valid: {', '.join(valid)}")
  CROSS_ATTENTION.check(cfg.cross_attention)
  if cfg.d_model % cfg.num_heads and not cfg.head_dim:
    raise ConfigError(f"model.d_model={cfg.d_model} is not divisible by "
                      f"model.num_heads={cfg.num_heads}; set model.head_dim")
  if cfg.position_encoding == "rope" and cfg.heads_dim % 2:
    raise ConfigError(f"model.position_encoding='rope' rotates pairs of features: the head "
                      f"dimension must be even, got {cfg.heads_dim}")
  if cfg.position_encoding == "t5_relative" and not (
      cfg.relative_buckets >= 4 and cfg.relative_max_distance > cfg.relative_buckets // 2):
    raise ConfigError("model.relative_buckets must be >= 4 and model.relative_max_distance > "
                      f"relative_buckets // 2 (T5's exact-distance buckets), got "
                      f"{cfg.relative_buckets} and {cfg.relative_max_distance}")
  cfg.cross_layers()
  if cfg.share_embeddings and cfg.src_vocab_size != cfg.tgt_vocab_size:
    raise ConfigError("model.share_embeddings needs src_vocab_size == tgt_vocab_size "
                      f"(got {cfg.src_vocab_size} and {cfg.tgt_vocab_size})")
